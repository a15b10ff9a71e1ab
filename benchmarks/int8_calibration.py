"""Which activation calibration method to default to: held-out SQNR of each, every layer in int8.

For each network (the whole-network fixtures on seeded random normal inputs, 4 calibrate and 2
measure; PaddleOCR's PP-OCRv4 detector on rendered text images at 480x640, 16 calibrate and 8
measure, the last a scanned page), ``quantize`` folds and quantizes every layer with each method
and the held-out SQNR of the worst output is printed, with the detector's map IoU (probability
map > 0.3, FP32 against INT8) as a task figure.  Placement tensorrt, weights int8, onnxruntime CPU.

    python benchmarks/int8_calibration.py [--det-model PATH] [--no-det]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_data import det_model, text_sets  # noqa: E402

from qarep_onnx.int8 import quantize  # noqa: E402
from qarep_onnx.runtime.validation import run  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NETWORKS = ("net_repvgg_a0_small", "net_mobileone_s0_small", "net_fastvit_small", "qarep_detector", "yolonas_deep")
METHODS = (("max", 99.99), ("percentile", 99.9), ("percentile", 99.99), ("percentile", 99.999), ("entropy", 99.99))


def map_iou(model: onnx.ModelProto, qdq: onnx.ModelProto, files: list[Path], threshold: float = 0.3) -> float:
    """Intersection over union of the detector's text maps (probability > threshold), FP32 against INT8, all files together."""
    inter = union = 0
    for path in files:
        feeds = dict(np.load(path))
        a, b = next(iter(run(model, feeds).values())) > threshold, next(iter(run(qdq, feeds).values())) > threshold
        inter += int((a & b).sum())
        union += int((a | b).sum())
    return inter / union if union else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--det-model", type=Path, help="ch_PP-OCRv4_det_infer.onnx (else taken out of the rapidocr wheel)")
    parser.add_argument("--no-det", action="store_true", help="fixtures only")
    args = parser.parse_args()
    manifest = {(e["name"], e["exporter"]): e for e in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]}
    cases = [(name, FIXTURES / manifest[(name, "torchscript")]["file"], None, None) for name in NETWORKS]
    if not args.no_det:
        calib, held = text_sets(Path(tempfile.mkdtemp(prefix="ocr_sets_")))
        cases.append(("PP-OCRv4 det (text images)", args.det_model or det_model(), calib, held))
    head = ["network"] + [m if m != "percentile" else f"pct {p:g}" for m, p in METHODS]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for name, path, calib, held in cases:
        cells = []
        for method, percentile in METHODS:
            start = time.perf_counter()
            result = quantize(path, calib=calib, holdout=held, calib_method=method, percentile=percentile, provider="cpu")
            cell = f"{result.report.measurement.sqnr_db:.1f}"
            if held is not None:
                cell += f" (IoU {map_iou(onnx.load(path), result.model, held):.3f})"
            cells.append(cell)
            print(f"  {name} {method} {percentile:g}: {cell}, {time.perf_counter() - start:.1f} s", file=sys.stderr)
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
