"""A model's own float noise: how far its outputs move under changes that do not change its function.

A correct fold moves a deep network's outputs by about as much as onnxruntime's own graph
optimizations do, or a one-ulp change of every weight (the rounding a fold commits once).  This
module makes the models those measurements run (a copy with every weight moved one ulp; exact
float32 copies of float16 and float64 models for the CPU provider, which has no float16 or
float64 Conv) and holds the constants of the calibrated tolerance.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..fold.ops import WEIGHT_INPUTS
from ..graph.tensors import tensor_values
from ..graph.walk import model_tensors, scopes

# Fixed tolerances (rtol by the model's float type) for models whose noise floor cannot be measured.
DEFAULT_RTOL = {onnx.TensorProto.FLOAT: 1e-5, onnx.TensorProto.FLOAT16: 1e-2, onnx.TensorProto.DOUBLE: 1e-5}
# A correct fold stays within this many noise floors (measured: README, "How validation decides").
FACTOR = 8.0
# The smallest floor, relative to an output's scale: one ulp of the coarser of the weights' type and
# the arithmetic the sessions run in (float16 and float64 models run in float32 on the CPU).  A
# measured floor can come out lucky-small where few weights reach an output; a float16 weight rounded
# once by a fold is off by up to half a float16 ulp whatever the draw.
EPS = {onnx.TensorProto.FLOAT: 2.0**-23, onnx.TensorProto.FLOAT16: 2.0**-10, onnx.TensorProto.DOUBLE: 2.0**-52}
_WIDE = (onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def model_float_type(model: onnx.ModelProto) -> int:
    """The float element type the model computes in (that of its first float input or initializer)."""
    for value in list(model.graph.input) + list(model.graph.output):
        t = value.type.tensor_type.elem_type
        if t in DEFAULT_RTOL:
            return t
    for init in model.graph.initializer:
        if init.data_type in DEFAULT_RTOL:
            return init.data_type
    return onnx.TensorProto.FLOAT


def as_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """An exact float32 copy of a float16/float64 model (every float tensor and type widened)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)

    def convert_type(value_info) -> None:
        tt = value_info.type.tensor_type
        if tt.elem_type in _WIDE:
            tt.elem_type = onnx.TensorProto.FLOAT

    for t in model_tensors(copy):
        if t.data_type in _WIDE:
            t.CopyFrom(numpy_helper.from_array(tensor_values(t).astype(np.float32), t.name))
    for scope in scopes(copy):
        for v in scope.value_infos:
            convert_type(v)
        for node in scope.nodes:
            for attr in node.attribute:
                if attr.name == "to" and node.op_type == "Cast" and attr.i in _WIDE:
                    attr.i = onnx.TensorProto.FLOAT
    return copy


def _weight_names(nodes) -> set[str]:
    """Names read as weights by the nodes of one graph, Identity aliases followed back to their source."""
    names: set[str] = set()
    aliases = {}
    for node in nodes:
        slots = WEIGHT_INPUTS.get(node.op_type, ())  # weights only: never the sizes or scales of a Resize
        inputs = list(node.input) if slots is None else [node.input[i] for i in slots if i < len(node.input)]
        names.update(n for n in inputs if n)
        if node.op_type == "Identity" and node.input:
            aliases[node.output[0]] = node.input[0]
    for alias, source in reversed(list(aliases.items())):
        if alias in names:
            names.add(source)
    return names


def perturbed_by_one_ulp(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto | None:
    """A copy with every float weight moved one ulp up or down at random, or None if it has none."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy if perturb_by_one_ulp(copy, seed) else None


def perturb_by_one_ulp(model: onnx.ModelProto, seed: int = 0) -> bool:
    """Move every finite float weight of ``model`` one ulp up or down at random, in place; False if it has none."""
    rng = np.random.default_rng(seed)
    changed = False
    for scope in scopes(model):
        weights = _weight_names(scope.nodes)
        tensors = [t for t in scope.initializers if t.name in weights]
        for node in scope.nodes:
            if node.op_type == "Constant" and node.output and node.output[0] in weights:
                tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
        for t in tensors:
            changed |= _move_one_ulp(t, rng)
    return changed


def _move_one_ulp(t: onnx.TensorProto, rng: np.random.Generator) -> bool:
    if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
        return False
    values = tensor_values(t)
    if not values.size:
        return False
    direction = np.where(rng.integers(0, 2, values.shape).astype(bool), np.inf, -np.inf).astype(values.dtype)
    with np.errstate(all="ignore"):
        moved = np.nextafter(values, direction)
    # Only finite weights move: a -inf mask stays -inf (nextafter would make it the largest finite number).
    moved = np.where(np.isfinite(values) & np.isfinite(moved), moved, values)
    t.CopyFrom(numpy_helper.from_array(moved.astype(values.dtype), t.name))
    return True


