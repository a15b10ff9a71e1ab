import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers.checks import assert_same_function  # noqa: E402


@pytest.fixture
def same_function():
    return assert_same_function
