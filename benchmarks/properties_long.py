"""Run the property tests (tests/test_properties.py) under the long hypothesis profile.

    python benchmarks/properties_long.py [extra pytest arguments]

The ``long`` profile draws at least 1000 examples per property (CI runs the derandomized ``ci``
profile).  Prints how many examples ran and the wall time, and exits with pytest's exit code.
Failures print a ``@reproduce_failure`` blob and the smallest example hypothesis found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COUNTS = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid test cases")


def main(argv: list[str]) -> int:
    env = dict(os.environ, QAREP_HYPOTHESIS_PROFILE="long")
    command = [sys.executable, "-m", "pytest", "-q", "--hypothesis-show-statistics", "tests/test_properties.py", *argv]
    print("running:", " ".join(command), flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    passing = failing = invalid = 0
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        match = COUNTS.search(line)
        if match:
            passing += int(match[1])
            failing += int(match[2])
            invalid += int(match[3])
    code = process.wait()
    elapsed = time.perf_counter() - start
    print(
        f"\nproperties (long profile): {passing + failing} examples ran "
        f"({passing} passing, {failing} failing; {invalid} discarded as invalid) "
        f"in {elapsed:.1f} s; pytest exit code {code}"
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
