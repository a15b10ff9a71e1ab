"""The measurements behind validation's calibrated tolerance (qarep_onnx.runtime.validation.FACTOR).

    python benchmarks/validation_calibration.py [--samples 3]

For every fixture with a fold: the error of the correct fold, and of the framework's own fused
export, as a multiple of the original model's noise floor; then, on a shallow, a network and the
deep fixture, the same multiple for folds broken the ways a buggy fold would be (tests/breakage.py).
A good factor sits well above the first group and well below the second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import qarep_onnx  # noqa: E402
from helpers.breakage import BREAKAGES, drop_branch  # noqa: E402
from qarep_onnx.runtime.noise import FACTOR  # noqa: E402
from qarep_onnx.runtime.validation import validate  # noqa: E402

FIXTURES = ROOT / "fixtures"
BROKEN_ON = ("qarep_s4_alpha_relu__torchscript", "qarep_detector__torchscript", "net_repvgg_a0_small__torchscript_nofold",
             "yolonas_deep__torchscript", "yolonas_deep__dynamo")


def _multiples(result) -> list[float]:
    return [o.noise_multiple for o in result.outputs if o.noise_multiple is not None]


def _summary(label: str, values: list[float]) -> str:
    v = np.asarray(values)
    return (f"{label:<34} n={len(v):<4} median {np.median(v):6.2f}x  p99 {np.percentile(v, 99):6.2f}x  "
            f"max {v.max():6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    manifest = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
    start = time.perf_counter()
    folds, natives, deep = [], [], []
    for entry in manifest:
        model = onnx.load(FIXTURES / entry["file"])
        optimized, report = qarep_onnx.optimize(model)
        if report.regions_folded:
            result = validate(model, optimized, provider="cpu", samples=args.samples)
            folds += _multiples(result)
            if entry["kind"] == "detector_deep":
                deep += _multiples(result)
        if entry["native_file"]:
            native = onnx.load(FIXTURES / entry["native_file"])
            natives += _multiples(validate(model, native, provider="cpu", samples=args.samples))
    print(f"error / noise floor per output, onnxruntime CPU, {args.samples} input sets each; FACTOR = {FACTOR:g}")
    print(_summary("correct folds (every fixture)", folds))
    print(_summary("correct folds (deep fixture)", deep))
    print(_summary("native fused exports", natives))
    print()
    print(f"{'broken fold':<30}" + "".join(f"{name.split('__')[0][:16]:>18}" for name in BROKEN_ON))
    cases = {name: None for name in BREAKAGES} | {"a branch dropped": None}
    rows = {case: [] for case in cases}
    for name in BROKEN_ON:
        model = onnx.load(FIXTURES / "models" / f"{name}.onnx")
        optimized, report = qarep_onnx.optimize(model)
        for case in cases:
            broken = drop_branch(model, report) if case == "a branch dropped" else BREAKAGES[case](optimized, report)
            result = validate(model, broken, provider="cpu", samples=args.samples)
            rows[case].append(f"{min(_multiples(result)):.3g}x {result.status[:4]}")
    for case, cells in rows.items():
        print(f"{case:<30}" + "".join(f"{c:>18}" for c in cells))
    print("(for broken folds: the smallest multiple over the outputs, and the verdict)")
    print(f"took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
