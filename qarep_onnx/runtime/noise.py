"""A model's own float noise: how far its outputs move under changes that do not change its function.

A correct fold moves a deep network's outputs by about as much as onnxruntime's own graph
optimizations do, or a one-ulp change of every weight (the rounding a fold commits once).  This
module makes the models those measurements run (a copy with every weight moved one ulp; exact
float32 copies of float16 and float64 models for the CPU provider, which has no float16 or
float64 Conv) and holds the constants of the calibrated tolerance.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from ..fold.ops import WEIGHT_INPUTS
from ..graph.tensors import tensor_values
from ..graph.walk import model_tensors, scopes
from ..numbers import narrow_range

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


_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


_CHUNK = 1 << 20


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="qarep-onnx-ulp")


_BITS = {np.dtype(np.float16): np.int16, np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def _step(values: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
    """``out`` (the integer view of a float array) becomes ``values`` moved one ulp toward +inf where
    ``up``, toward -inf elsewhere, exactly as ``nextafter`` moves them, on their bit patterns.

    Non-finite values stay as they are (a -inf mask stays -inf), and so does a value the step would
    make infinite.  So do the values of a narrow type below its normal range: one ulp there is a
    larger relative step than any rounding of a normal number, and a floor widened by it would pass a
    fold whose weights lost their bits there (a float16 BatchNorm scale of 1e-5 moves 0.6% in one ulp).
    """
    ints = values.view(out.dtype)
    finfo = np.finfo(values.dtype)
    exponent = out.dtype.type(((1 << finfo.nexp) - 1) << finfo.nmant)
    sign = out.dtype.type(np.iinfo(out.dtype).min)
    # A step toward +inf grows a positive value's bits and shrinks a negative one's: +1 or -1 on the bits.
    grows = up != (ints < 0)
    np.add(ints, grows.view(np.int8) * np.int8(2) - np.int8(1), out=out, casting="unsafe")
    zero = (ints & ~sign) == 0  # +0 and -0 step to the smallest subnormal of the side asked
    if zero.any():
        out[zero] = np.where(up[zero], 1, sign | 1)
    stuck = ((ints & exponent) == exponent) | ((out & exponent) == exponent)
    if narrow_range(values.dtype):
        stuck |= (ints & exponent) == 0
    if stuck.any():
        out[stuck] = ints[stuck]


class OneUlp:
    """Moves float weights one ulp up or down, at random (seeded), tensor by tensor in the order asked.

    Only finite values move: a -inf mask stays -inf (one ulp would make it the largest finite number),
    and the largest finite value does not become an infinity; in float16, only normal numbers move.
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def moved(self, tensor: onnx.TensorProto) -> np.ndarray | None:
        """The tensor's values moved, or None for a tensor that is not float or has no element."""
        if tensor.data_type not in _FLOATS:
            return None
        return self.moved_values(tensor_values(tensor)) if math.prod(tensor.dims) else None

    def moved_values(self, array: np.ndarray) -> np.ndarray:
        """A float array's values moved (a new array of its shape)."""
        values = array.reshape(-1)
        bits = self.rng.integers(0, 256, (values.size + 7) // 8, dtype=np.uint8)
        up = np.unpackbits(bits, count=values.size).view(bool)
        moved = np.empty(values.shape, _BITS[values.dtype])
        # numpy lets go of the GIL in these loops: large tensors move in chunks on every core.
        if values.size <= _CHUNK:
            _step(values, up, moved)
        else:
            chunks = [slice(k, k + _CHUNK) for k in range(0, values.size, _CHUNK)]
            list(_pool().map(lambda chunk: _step(values[chunk], up[chunk], moved[chunk]), chunks))
        return moved.view(values.dtype).reshape(array.shape)

    def raw(self, tensor: onnx.TensorProto) -> bytes | None:
        """The moved values as the little-endian bytes a tensor stores."""
        moved = self.moved(tensor)
        return None if moved is None else moved.astype(moved.dtype.newbyteorder("<")).tobytes()


def weight_tensors(scope, main_initializers: bool = True) -> list[onnx.TensorProto]:
    """The tensors of one graph or body that hold weights: initializers its nodes read as weights (unless
    told not to) and the values of its Constant nodes read as weights."""
    weights = _weight_names(scope.nodes)
    tensors = [t for t in scope.initializers if t.name in weights] if main_initializers else []
    for node in scope.nodes:
        if node.op_type == "Constant" and node.output and node.output[0] in weights:
            tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return tensors


def main_graph_weights(model: onnx.ModelProto) -> set[str]:
    """The main graph's initializers read as weights."""
    weights = _weight_names(model.graph.node)
    return {t.name for t in model.graph.initializer if t.name in weights}


@contextlib.contextmanager
def moved_in_place(model: onnx.ModelProto, ulp: OneUlp, main_initializers: bool) -> Iterator[bool]:
    """Within the block, the model's weights moved in place (not the main graph's initializers unless
    told); after it, as they were.  Yields whether any moved."""
    tensors = [t for scope in scopes(model)
               for t in weight_tensors(scope, main_initializers or scope.graph is not model.graph)]
    saved = []
    try:
        for tensor in tensors:
            moved = ulp.moved(tensor)
            if moved is not None:
                kept = onnx.TensorProto()
                kept.CopyFrom(tensor)
                saved.append((tensor, kept))
                tensor.CopyFrom(numpy_helper.from_array(moved, tensor.name))
        yield bool(saved)
    finally:
        for tensor, kept in saved:
            tensor.CopyFrom(kept)


def perturbed_by_one_ulp(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto | None:
    """A copy with every float weight moved one ulp up or down at random, or None if it has none."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy if perturb_by_one_ulp(copy, OneUlp(seed)) else None


def perturb_by_one_ulp(model: onnx.ModelProto, ulp: OneUlp, main_initializers: bool = True) -> bool:
    """Move the float weights of ``model`` in place (not the main graph's initializers when told); False if none moved."""
    changed = False
    for scope in scopes(model):
        for tensor in weight_tensors(scope, main_initializers or scope.graph is not model.graph):
            moved = ulp.moved(tensor)
            if moved is not None:
                tensor.CopyFrom(numpy_helper.from_array(moved, tensor.name))
                changed = True
    return changed
