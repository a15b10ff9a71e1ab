"""FLOPs for ``quantize``'s summary at the shapes the calibration inputs really had.

The fold estimates FLOPs from the model's declared shapes, so a model with symbolic dimensions
gets no estimate (``?``).  ``quantize`` ran the model on calibration inputs of known shapes, so it
estimates with those instead, one sample at a time: a symbolic leading (batch) dimension counts as
1, whatever the sets held.  The report says which shapes were used.
"""

from __future__ import annotations

import onnx

from ..runtime.inputs import InputSet
from ..stats import model_stats, tensor_shapes


def _per_sample(model: onnx.ModelProto, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    declared = next((i for i in model.graph.input if i.name == name), None)
    if declared is None or not shape:
        return shape
    dims = declared.type.tensor_type.shape.dim
    if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
        return (1,) + tuple(shape[1:])
    return shape


def estimate_at_input_shapes(original: onnx.ModelProto, folded: onnx.ModelProto, report, first: InputSet,
                             input_shapes: dict[str, tuple[int, ...]] | None) -> dict[str, tuple[int, ...]] | None:
    """Fill the fold report's FLOPs from ``first``'s shapes when the model's own did not give any; the shapes used, or None."""
    if report.stats_before is None or (report.stats_before.flops is not None and report.stats_after.flops is not None):
        return None
    shapes = {name: _per_sample(original, name, tuple(int(d) for d in value.shape)) for name, value in first.feeds.items()}
    shapes.update(input_shapes or {})
    inferred = tensor_shapes(original, shapes)
    before, after = model_stats(original, inferred, shapes), model_stats(folded, inferred, shapes)
    if before.flops is None or after.flops is None:
        return None
    report.stats_before, report.stats_after = before, after
    return shapes
