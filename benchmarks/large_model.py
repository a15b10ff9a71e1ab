"""How close ``qarep-onnx optimize`` gets to the cost of just reading and writing a large model.

Builds synthetic QARepVGG networks (benchmarks/synthetic.py) and measures, side by side in one
run and interleaved, the wall time and peak RSS of

* baseline: ``onnx.load`` + ``onnx.save`` of the model, in a fresh process;
* ``qarep-onnx -q optimize IN OUT``, in a fresh process;

then the fold step alone at two sizes, to show it grows linearly with the number of blocks.
Both commands write a file that does not exist yet (outputs are deleted before each run): on
this machine rewriting an existing file in place is several times faster than writing a new one,
which would otherwise favour whichever side happens to overwrite.
``--huge`` also round-trips a model over 2 GB (external data in and out), and folds it again with
``--validate`` (which must complete on this 24 GB machine).

    python benchmarks/large_model.py                  # 150 and 300 blocks of 192 channels
    python benchmarks/large_model.py --huge           # plus a model over 2 GB
    python benchmarks/large_model.py --blocks --huge  # only the model over 2 GB
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import qarepvgg_network  # noqa: E402

BASELINE = "import onnx, sys; m = onnx.load(sys.argv[1]); onnx.save(m, sys.argv[2])"
FOLD_ONLY = """
import sys, time, onnx
from qarep_onnx.fold.passes import fold_model
m = onnx.load(sys.argv[1])
t = time.perf_counter(); report = fold_model(m); dt = time.perf_counter() - t
print(dt, report.blocks_folded)
"""


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command, measured by /usr/bin/time."""
    result = subprocess.run(["/usr/bin/time", "-f", "%e %M", *argv], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(argv)}\n{result.stderr}")
    seconds, kb = result.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kb) / 1024


def compare(model_path: Path, work: Path, repeat: int) -> dict[str, list[tuple[float, float]]]:
    runs: dict[str, list[tuple[float, float]]] = {"load+save": [], "optimize": []}
    copy, out = work / "copy.onnx", work / "out.onnx"
    for _ in range(repeat):
        copy.unlink(missing_ok=True)
        runs["load+save"].append(timed([sys.executable, "-c", BASELINE, str(model_path), str(copy)]))
        out.unlink(missing_ok=True)
        runs["optimize"].append(timed([sys.executable, "-m", "qarep_onnx", "-q", "optimize", str(model_path), str(out)]))
    return runs


def fold_seconds(model_path: Path) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", FOLD_ONLY, str(model_path)], capture_output=True, text=True, check=True)
    seconds, blocks = out.stdout.split()
    return float(seconds), int(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, nargs="*", default=[150, 300])
    parser.add_argument("--channels", type=int, default=192)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--huge", action="store_true", help="also round-trip a model over 2 GB")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qarep-bench-") as tmp:
        work = Path(tmp)
        print(f"{'blocks':>6} {'size MB':>8} | {'load+save s':>11} {'optimize s':>10} {'ratio*':>6} | "
              f"{'load+save MB':>12} {'optimize MB':>11} {'ratio':>6}")
        folds = []
        for blocks in args.blocks:
            path = work / f"qarepvgg_{blocks}.onnx"
            onnx.save(qarepvgg_network(blocks, args.channels), path)
            size = path.stat().st_size / 2**20
            runs = compare(path, work, args.repeat)
            base_t = statistics.median(t for t, _ in runs["load+save"])
            opt_t = statistics.median(t for t, _ in runs["optimize"])
            base_m = statistics.median(m for _, m in runs["load+save"])
            opt_m = statistics.median(m for _, m in runs["optimize"])
            # Ratio of each back-to-back pair, then the median: disk speed here drifts between runs.
            ratio_t = statistics.median(o[0] / b[0] for b, o in zip(runs["load+save"], runs["optimize"]))
            print(f"{blocks:>6} {size:>8.0f} | {base_t:>11.2f} {opt_t:>10.2f} {ratio_t:>6.2f} | "
                  f"{base_m:>12.0f} {opt_m:>11.0f} {opt_m / base_m:>6.2f}")
            folds.append((blocks, *fold_seconds(path)))
            path.unlink()
        if folds:
            print(f"(medians of {args.repeat} runs; ratio* = median of the ratios of back-to-back runs)")
            print("\nfold step alone (load excluded):")
        for blocks, seconds, folded in folds:
            print(f"  {blocks:>4} blocks: {seconds:.3f} s, {1e3 * seconds / blocks:.2f} ms per block ({folded} folded)")

        if args.huge:
            huge(work)


def huge(work: Path) -> None:
    """A model over 2 GB: external data in, external data out, and the output reads back."""
    blocks, channels = 380, 384
    path = work / "huge.onnx"
    start = time.perf_counter()
    onnx.save_model(qarepvgg_network(blocks, channels), path, save_as_external_data=True, location="huge.onnx.data")
    size = (path.stat().st_size + (work / "huge.onnx.data").stat().st_size) / 2**30
    print(f"\nhuge model: {blocks} blocks, {size:.2f} GB with external data (built in {time.perf_counter() - start:.0f} s)")
    seconds, peak = timed([sys.executable, "-m", "qarep_onnx", "-q", "optimize", str(path), str(work / "huge_out.onnx")])
    out = onnx.load(work / "huge_out.onnx")
    convs = sum(1 for n in out.graph.node if n.op_type == "Conv")
    data = (work / "huge_out.onnx.data").stat().st_size / 2**30
    print(f"  optimize: {seconds:.1f} s, peak {peak / 1024:.2f} GB; output {convs} Conv nodes, {data:.2f} GB external data")
    assert convs == blocks, f"expected {blocks} Conv nodes, got {convs}"
    del out
    for name in ("huge_out.onnx", "huge_out.onnx.data"):
        (work / name).unlink()
    seconds, peak = timed([sys.executable, "-m", "qarep_onnx", "-q", "optimize", "--validate", "--provider", "cpu",
                           str(path), str(work / "huge_out.onnx")])
    print(f"  optimize --validate: {seconds:.1f} s, peak {peak / 1024:.2f} GB")


if __name__ == "__main__":
    main()
