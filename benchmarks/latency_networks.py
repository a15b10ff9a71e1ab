"""onnxruntime latency of whole networks: unfused export, qarep-onnx output, native export.

For each network fixture (built from re-parameterizable blocks and exported by PyTorch, see
fixtures/), the three models run side by side in one process, interleaved run by run, on the
same seeded input with onnxruntime's default graph optimizations (on a GPU through IO binding,
waiting for each run's outputs).

    python benchmarks/latency_networks.py [--runs 200] [--exporter torchscript] [--provider cpu|cuda|tensorrt]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx

import qarep_onnx
from qarep_onnx.runtime.bench import compare
from qarep_onnx.runtime.providers import select_provider

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NETWORKS = ("net_repvgg_a0_small", "net_mobileone_s0_small", "net_fastvit_small", "qarep_detector", "yolonas_deep",
            "repvit_m1_like")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--exporter", default="torchscript", choices=("torchscript", "torchscript_nofold", "dynamo"))
    parser.add_argument("--provider", default="cpu", choices=("cpu", "cuda", "tensorrt"))
    args = parser.parse_args()

    manifest = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
    choice = select_provider(args.provider)
    print(f"onnxruntime {choice.note}, {args.runs} interleaved runs after {args.warmup} warm-up, median (p90) in ms")
    print(f"{'network':<26} {'unfused':>16} {'qarep-onnx':>16} {'native':>16} {'speedup':>8} {'vs native':>9}")
    for name in NETWORKS:
        entry = next(e for e in manifest if e["name"] == name and e["exporter"] == args.exporter)
        unfused = onnx.load(FIXTURES / entry["file"])
        optimized = qarep_onnx.optimize(unfused).model
        native = onnx.load(FIXTURES / entry["native_file"])
        before, ours, theirs = compare([unfused, optimized, native], choice, args.warmup, args.runs)
        cells = [f"{m.median_ms:.3f} ({m.p90_ms:.3f})" for m in (before, ours, theirs)]
        print(f"{name:<26} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} "
              f"{before.median_ms / ours.median_ms:>7.2f}x {ours.median_ms / theirs.median_ms:>8.3f}")


if __name__ == "__main__":
    main()
