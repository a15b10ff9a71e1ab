"""What ``--validate`` costs next to what its verdict needs, in time and peak memory.

For synthetic QARepVGG networks of the sizes of YOLO-NAS-S (50 MB), YOLO-NAS-L (178 MB) and a
424 MB model, measured side by side in one run, each command in a fresh process (peak RSS by
/usr/bin/time):

* ``optimize``: ``qarep-onnx -q optimize IN OUT``;
* ``--validate``: the same with ``--validate --provider cpu``;
* ``floor cost``: the onnxruntime work the verdict needs, done directly: sessions of the original
  (optimizations off, and on), of the original with every weight moved one ulp and of the folded
  model, each created from its file and run on one input set, one session at a time;
* ``validate``: ``qarep-onnx -q validate IN OUT``, against one plain session of IN (created, run once);
* ``--samples 2`` and ``--samples 50`` of ``optimize --validate`` on the 50 MB model.

The issue's targets: ``--validate`` peak at most 2x ``optimize``'s, ``validate`` at most 2x a plain
session's, the time ``--validate`` adds at most 1.5x the floor cost, and 50 samples no more memory
than 2.

    python benchmarks/validation_cost.py                 # 50, 178 and 424 MB
    python benchmarks/validation_cost.py --sizes 50      # just one
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import qarepvgg_network  # noqa: E402

CHANNELS = 192
BLOCK_MB = 1.41  # one synthetic block of 192 channels

FLOOR_COST = """
import sys, numpy as np, onnxruntime as ort
original, perturbed, folded = sys.argv[1:4]
x = {"input": np.random.default_rng(0).standard_normal((1, 192, 8, 8)).astype(np.float32)}
for path, level in ((original, "off"), (original, "on"), (perturbed, "off"), (folded, "off")):
    options = ort.SessionOptions()
    if level == "off":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    session.run(None, x)
    del session
"""
PLAIN_SESSION = """
import sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
session.run(None, {"input": np.random.default_rng(0).standard_normal((1, 192, 8, 8)).astype(np.float32)})
"""


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command, measured by /usr/bin/time."""
    result = subprocess.run(["/usr/bin/time", "-f", "%e %M", *map(str, argv)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(map(str, argv))}\n{result.stderr}")
    seconds, kb = result.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kb) / 1024


def qarep(*args) -> list[str]:
    return [sys.executable, "-m", "qarep_onnx", "-q", *map(str, args)]


def measure(size_mb: int, work: Path) -> dict[str, tuple[float, float]]:
    from qarep_onnx.runtime.noise import perturbed_by_one_ulp

    model = qarepvgg_network(round(size_mb / BLOCK_MB), CHANNELS)
    path, perturbed, out = work / "in.onnx", work / "perturbed.onnx", work / "out.onnx"
    onnx.save(model, path)
    onnx.save(perturbed_by_one_ulp(model), perturbed)
    del model
    runs = {}
    out.unlink(missing_ok=True)
    runs["optimize"] = timed(qarep("optimize", path, out))
    out.unlink()
    runs["optimize --validate"] = timed(qarep("optimize", "--validate", "--provider", "cpu", path, out))
    runs["floor cost"] = timed([sys.executable, "-c", FLOOR_COST, path, perturbed, out])
    runs["validate IN OUT"] = timed(qarep("validate", "--provider", "cpu", path, out))
    runs["plain session of IN"] = timed([sys.executable, "-c", PLAIN_SESSION, path])
    if size_mb == min(SIZES):
        for samples in (2, 50):
            out.unlink()
            runs[f"--validate --samples {samples}"] = timed(qarep("optimize", "--validate", "--provider", "cpu",
                                                                   "--samples", samples, path, out))
    for p in (path, perturbed, out):
        p.unlink(missing_ok=True)
    return runs


SIZES = [50, 178, 424]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="model sizes in MB")
    args = parser.parse_args()
    SIZES[:] = args.sizes
    with tempfile.TemporaryDirectory(prefix="qarep-bench-") as tmp:
        for size in args.sizes:
            runs = measure(size, Path(tmp))
            print(f"\n{size} MB model ({round(size / BLOCK_MB)} blocks of {CHANNELS} channels, CPU)")
            for name, (seconds, mb) in runs.items():
                print(f"  {name:<28} {seconds:7.2f} s  {mb:7.0f} MB")
            (opt_t, opt_m), (val_t, val_m) = runs["optimize"], runs["optimize --validate"]
            floor_t = runs["floor cost"][0]
            print(f"  --validate peak / optimize peak:   {val_m / opt_m:.2f}  (target <= 2)")
            print(f"  validate peak / plain session:     {runs['validate IN OUT'][1] / runs['plain session of IN'][1]:.2f}"
                  "  (target <= 2)")
            print(f"  time --validate adds / floor cost: {(val_t - opt_t) / floor_t:.2f}  (target <= 1.5)")
            if "--validate --samples 50" in runs:
                ratio = runs["--validate --samples 50"][1] / runs["--validate --samples 2"][1]
                print(f"  peak with 50 samples / with 2:     {ratio:.2f}")


if __name__ == "__main__":
    main()
