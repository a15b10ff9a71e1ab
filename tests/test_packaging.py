"""The versions pyproject.toml promises are the versions CI runs the suite on: .ci/oldest.txt pins each
runtime dependency at its declared lower bound, and .ci/run installs those pins and runs the tests."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lower_bounds() -> dict[str, str]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {}
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", requirement)
        assert match, f"{requirement!r}: each runtime dependency needs exactly one lower bound (name>=version)"
        bounds[match[1].lower()] = match[2]
    return bounds


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "oldest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_ci_pins_every_runtime_dependency_at_its_declared_lower_bound():
    assert _pins() == _lower_bounds()


def test_ci_runs_the_suite_on_the_pinned_versions():
    run = (ROOT / ".ci" / "run").read_text()
    assert "-c .ci/oldest.txt" in run and run.count("-m pytest") == 2
