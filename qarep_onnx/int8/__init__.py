"""INT8 for TensorRT: how post-training quantization treats a (folded) model, and the Q/DQ model itself.

Modules, one job each:

* :mod:`.sqnr` -- symmetric int8 arithmetic and the figures (SQNR, spread, cosine); pure numpy.
* :mod:`.layers` -- the weighted nodes ("layers") and their output-channel axis.
* :mod:`.weights` -- the weight report: ranges, spread, per-tensor and per-channel SQNR, outliers.
* :mod:`.prepare` -- the working copy onnxruntime's quantizer takes (opset, constants, names, shapes).
* :mod:`.datasets` -- calibration and held-out input sets (files, split, or random).
* :mod:`.calibrate` -- float runs: activation ranges, FP32 references, activation SQNR.
* :mod:`.qdq` -- the Q/DQ model through onnxruntime's QDQ quantizer, in TensorRT's form.
* :mod:`.measure` -- FP32 against INT8 per output.
* :mod:`.sensitivity` -- layer ranking and the set to keep in float.
* :mod:`.report` -- the results as data; :mod:`.render` -- as lines of text.
* :mod:`.api` -- :func:`int8_report` and :func:`quantize`.
"""

from .api import QuantizeResult, int8_report, quantize
from .report import INT8_SCHEMA_VERSION, Int8Report, QuantizeReport

__all__ = ["INT8_SCHEMA_VERSION", "Int8Report", "QuantizeReport", "QuantizeResult", "int8_report", "quantize"]
