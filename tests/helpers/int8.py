"""What the INT8 tests share: input sets, graph lookups, and the checks every written model must pass."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qarep_onnx.runtime.inputs import InputSet, random_input_sets


def sets(model: onnx.ModelProto, seeds, label: str, scale: float = 1.0) -> list[InputSet]:
    return [InputSet({k: (v * scale).astype(v.dtype) for k, v in random_input_sets(model, 1, s)[0].feeds.items()}, f"{label} {s}")
            for s in seeds]


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def quantized_source(model: onnx.ModelProto, tensor: str) -> tuple[str, onnx.NodeProto, onnx.NodeProto] | None:
    """(the float tensor, Q, DQ) when ``tensor`` is a DequantizeLinear output fed by a QuantizeLinear, else None."""
    made = producers(model)
    dq = made.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    q = made.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return None
    return q.input[0], q, dq


def assert_written(model: onnx.ModelProto, original: onnx.ModelProto | None = None) -> None:
    """What every model a command writes must be: checker-valid with full_check, topologically sorted, IR not raised."""
    onnx.checker.check_model(model, full_check=True)
    known = {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input} | {""}
    for n in model.graph.node:
        missing = [i for i in n.input if i not in known]
        assert not missing, f"{n.name} reads {missing} before they are computed"
        known.update(n.output)
    if original is not None:
        assert model.ir_version <= max(original.ir_version, 7)
