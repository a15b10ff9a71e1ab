"""INT8 for TensorRT: how post-training quantization treats a (folded) model, and the Q/DQ model itself.

Modules, one job each:

* :mod:`.ops` -- the op table: layers, int8-flow ops, residual sums, positively homogeneous ops.
* :mod:`.sqnr` -- symmetric int8 arithmetic and the figures (SQNR, spread, cosine); pure numpy.
* :mod:`.layers` -- the weighted nodes ("layers") and their channel axes.
* :mod:`.weights` -- the weight report: ranges, spread, per-tensor and per-channel SQNR, outliers.
* :mod:`.prepare` -- the working copy (opset, constants, names, shapes).
* :mod:`.datasets` -- calibration, selection and held-out input sets (files, split, or random).
* :mod:`.placement` -- where Q/DQ pairs go (TensorRT's placement guidance, or layer inputs only).
* :mod:`.calibration_methods` -- max, percentile and entropy thresholds from streamed statistics.
* :mod:`.calibrate` -- float runs: activation statistics, FP32 references.
* :mod:`.qdq` -- the written Q/DQ model (int8 or float weights), topologically sorted.
* :mod:`.precision` -- float16 for the layers left in float, in the measurement.
* :mod:`.switch` -- one session that measures every candidate (pairs behind switches).
* :mod:`.measure` -- FP32 against INT8 per output (non-finite values compared by position).
* :mod:`.equalize` -- exact cross-layer equalization across positively homogeneous ops.
* :mod:`.sensitivity` -- layer ranking, selection on calibration data, confirmation on held-out data.
* :mod:`.exclude` -- ``--exclude`` patterns: names, op types, regular expressions.
* :mod:`.analysis` -- one model through the whole pipeline.
* :mod:`.flops` -- ``quantize``'s FLOPs at the calibration inputs' shapes.
* :mod:`.report` -- the results as data; :mod:`.html` -- as a self-contained page.
* :mod:`.api` -- :func:`int8_report` and :func:`quantize`.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "int8_report": "api",
    "quantize": "api",
    "QuantizeResult": "api",
    "INT8_SCHEMA_VERSION": "report",
    "Int8Report": "report",
    "QuantizeReport": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # imported on first use, so that the submodules load without the whole package
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qarep_onnx.int8' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
