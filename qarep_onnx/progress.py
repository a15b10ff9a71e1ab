"""Step timing for the long steps (load, fold, save, validate), reported through logging.

The library never prints: each step logs a start and an end line on the ``qarep_onnx.progress``
logger, and the CLI decides whether people see them.
"""

from __future__ import annotations

import contextlib
import logging
import time

progress_log = logging.getLogger("qarep_onnx.progress")


@contextlib.contextmanager
def step(what: str):
    """Log ``what...`` now and ``what: done in N s`` when the block ends."""
    progress_log.info("%s...", what)
    start = time.perf_counter()
    yield
    progress_log.info("%s: done in %.2f s", what, time.perf_counter() - start)
