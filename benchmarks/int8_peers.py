"""qarep-onnx against the INT8 tools a TensorRT user has: onnxruntime's quantize_static and NVIDIA ModelOpt.

Every tool gets the same model file, the same calibration inputs and is measured the same way, by
this script, on the same held-out inputs: each written model runs on onnxruntime's CPU provider with
graph optimizations off, against the original float32 model; SQNR of the worst output (signal and
noise powers summed over the held-out sets).  Figures per written model: held-out SQNR, Q/DQ pairs
(DequantizeLinear nodes), layers in int8 (Conv/ConvTranspose/Gemm/MatMul whose data input and
weight both come through a DequantizeLinear) out of all such layers, and the wall time of the
quantization call (ModelOpt's includes its process start).  For the text detector, also the map
IoU (probability > 0.3, FP32 against INT8, all held-out images together).

Tools (every layer in int8; none keeps a layer in float here):

* qarep-onnx: ``quantize`` (fold, then Q/DQ with TensorRT's placement, percentile calibration,
  int8 weights), and again with ``equalize=True``;
* onnxruntime ``quantize_static`` (QDQ, per-channel, QInt8 activations and weights, symmetric,
  MinMax calibration), on the model as given and on qarep-onnx's fold; once with its default op
  types (every op it can quantize) and once with the layer ops only (Conv, ConvTranspose, Gemm,
  MatMul), as this tool does;
* ModelOpt's ONNX PTQ (``python -m modelopt.onnx.quantization --quantize_mode int8``, its default
  entropy calibration, ``--high_precision_dtype fp32`` to compare like with like,
  ``--calibration_eps cpu``), on the model as given and on the fold, when ``--modelopt-python`` names
  the Python of the separate environment it lives in (it pins onnxruntime-gpu 1.24).

Networks: the whole-network fixtures (random weights; seeded random normal inputs, 4 calibrate and
2 measure) and PaddleOCR's PP-OCRv4 detector (trained; 16 rendered text images calibrate at 480x640,
8 others measure, the last a scanned page; ``int8_data.py``).  Random weights mislead INT8
conclusions: read the fixtures' rows as comparisons of forms, the detector's as the real case.

    python benchmarks/int8_peers.py [--modelopt-python /path/to/venv/bin/python] [--det-model PATH] [--no-det]
        [--networks NAME ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_calibration import map_iou  # noqa: E402
from int8_data import det_model, text_sets  # noqa: E402

from qarep_onnx.api import optimize  # noqa: E402
from qarep_onnx.int8 import quantize  # noqa: E402
from qarep_onnx.int8.measure import compare_outputs  # noqa: E402
from qarep_onnx.int8.prepare import MIN_OPSET, default_opset  # noqa: E402
from qarep_onnx.runtime.inputs import random_input_sets  # noqa: E402
from qarep_onnx.runtime.validation import run  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NETWORKS = ("net_repvgg_a0_small", "net_mobileone_s0_small", "net_fastvit_small", "qarep_detector", "yolonas_deep")
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def layers_in_int8(model: onnx.ModelProto) -> tuple[int, int]:
    made = {o: n.op_type for n in model.graph.node for o in n.output}
    layers = [n for n in model.graph.node if n.op_type in LAYER_OPS]
    quantized = [n for n in layers if len(n.input) > 1 and made.get(n.input[0]) == made.get(n.input[1]) == "DequantizeLinear"]
    return len(quantized), len(layers)


def held_out_sqnr(original: onnx.ModelProto, written: onnx.ModelProto, held: list[Path]) -> float:
    feeds = [dict(np.load(p)) for p in held]
    references = [run(original, f) for f in feeds]
    candidates = [run(written, f) for f in feeds]
    return min(q.sqnr_db for q in compare_outputs(list(references[0]), references, candidates))


class _Reader:
    """onnxruntime's CalibrationDataReader over .npz files."""

    def __init__(self, files: list[Path]) -> None:
        self.files = iter(files)

    def get_next(self):
        path = next(self.files, None)
        return dict(np.load(path)) if path is not None else None


def ort_static(source: Path, out: Path, calib: list[Path], layers_only: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(source), str(out), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    op_types_to_quantize=list(LAYER_OPS) if layers_only else None,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})


def modelopt(python: Path, source: Path, out: Path, calib: list[Path], folder: Path) -> None:
    stacked = folder / "modelopt_calib.npz"
    arrays = [dict(np.load(p)) for p in calib]
    np.savez(stacked, **{k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]})
    done = subprocess.run([str(python), "-m", "modelopt.onnx.quantization", "--onnx_path", str(source), "--quantize_mode",
                           "int8", "--calibration_data_path", str(stacked), "--output_path", str(out),
                           "--high_precision_dtype", "fp32", "--calibration_eps", "cpu"], capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError((done.stderr or done.stdout).strip().splitlines()[-1][:300])


def _files(model: onnx.ModelProto, folder: Path) -> tuple[list[Path], list[Path]]:
    paths = []
    for k in range(6):
        path = folder / f"set{k}.npz"
        np.savez(path, **random_input_sets(model, 1, k)[0].feeds)
        paths.append(path)
    return paths[:4], paths[4:]


def _row(label, tool, written, seconds, original, held, detector) -> str:
    sqnr = held_out_sqnr(original, written, held)
    quantized, total = layers_in_int8(written)
    pairs = sum(1 for n in written.graph.node if n.op_type == "DequantizeLinear")
    convs = sum(1 for n in written.graph.node if n.op_type in LAYER_OPS)
    iou = f" ({map_iou(original, written, held):.3f})" if detector else ""
    return f"| {label} | {tool} | {sqnr:.1f}{iou} | {pairs} | {quantized}/{total} | {convs} | {seconds:.1f} |"


def network(label: str, path: Path, folder: Path, calib, held, modelopt_python: Path | None, detector: bool) -> list[str]:
    original = onnx.load(path)
    if default_opset(original) < MIN_OPSET:  # every tool gets the same opset-13 model (per-channel Q/DQ needs it)
        original = onnx.version_converter.convert_version(original, MIN_OPSET)
        original.ir_version = max(original.ir_version, 7)
    given = folder / "given.onnx"
    onnx.save(original, given)
    folded_path = folder / "folded.onnx"
    onnx.save(optimize(original).model, folded_path)
    rows = []
    for tool, kwargs in (("qarep-onnx quantize", {}), ("qarep-onnx quantize --equalize", {"equalize": True})):
        start = time.perf_counter()
        result = quantize(original, calib=calib, holdout=held, provider="cpu", **kwargs)
        rows.append(_row(label, tool, result.model, time.perf_counter() - start, original, held, detector))
    for form, source in (("as given", given), ("folded by qarep-onnx", folded_path)):
        for ops, layers_only in (("default op types", False), ("layer ops only", True)):
            out = folder / f"ort_{form[:5]}_{layers_only}.onnx"
            start = time.perf_counter()
            ort_static(source, out, calib, layers_only)
            rows.append(_row(label, f"onnxruntime quantize_static ({ops}), {form}", onnx.load(out), time.perf_counter() - start,
                             original, held, detector))
        if modelopt_python is not None:
            out = folder / f"modelopt_{form[:5]}.onnx"
            start = time.perf_counter()
            try:
                modelopt(modelopt_python, source, out, calib, folder)
            except RuntimeError as exc:
                rows.append(f"| {label} | ModelOpt int8, {form} | failed: {exc} | | | | |")
                continue
            rows.append(_row(label, f"ModelOpt int8, {form}", onnx.load(out), time.perf_counter() - start, original, held, detector))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modelopt-python", type=Path, help="Python of the virtual environment ModelOpt is installed in")
    parser.add_argument("--det-model", type=Path, help="ch_PP-OCRv4_det_infer.onnx (else taken out of the rapidocr wheel)")
    parser.add_argument("--no-det", action="store_true")
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS))
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer logs advice on the root logger
    manifest = {(e["name"], e["exporter"]): e for e in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]}
    print("| network | tool | held-out SQNR dB" + (" (map IoU)" if not args.no_det else "") + " | Q/DQ pairs | layers in int8 | "
          "layers | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.networks:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            path = FIXTURES / manifest[(name, "torchscript")]["file"]
            calib, held = _files(onnx.load(path), folder)
            for row in network(name, path, folder, calib, held, args.modelopt_python, False):
                print(row, flush=True)
    if not args.no_det:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            calib, held = text_sets(folder / "sets")
            for row in network("PP-OCRv4 det", args.det_model or det_model(), folder, calib, held, args.modelopt_python, True):
                print(row, flush=True)


if __name__ == "__main__":
    main()
