"""Exact cross-layer equalization: move a per-channel scale from an activation into the layers around it.

For two layers joined by an activation ``y = f(A(x))`` read only by layer ``B``, where ``f`` is
positively homogeneous (``f(s x) = s f(x)`` for every ``s > 0``: Relu, LeakyRelu, PRelu, a Clip
with lower bound 0 and no upper bound, or no op at all), dividing output channel ``c`` of ``A``
(weights and bias) by ``s_c > 0`` divides channel ``c`` of ``y`` by ``s_c``, and multiplying
input channel ``c`` of ``B``'s weights by ``s_c`` undoes it: ``B(f(A(x)))`` is unchanged.  Never
across SiLU, GELU, Sigmoid or a clip with a non-zero bound, where the identity fails.  This is the
cross-layer equalization of Nagel et al., "Data-Free Quantization" (2019), with the scale chosen
the way SmoothQuant migrates difficulty between activations and weights: int8 gives ``y`` one
scale per tensor, so one large channel (a planted x50 outlier, or a trained one) costs every other
channel its resolution, while ``B``'s weights get one scale per *output* channel, so what the
input channels of ``B`` absorb only matters within each output row.  Balancing the two,

    s_c = sqrt(a_c / w_c)

with ``a_c`` the largest magnitude of channel ``c`` of ``y`` over the calibration sets and ``w_c``
the largest magnitude of ``B``'s weights on input channel ``c``.  Each ``s_c`` is rounded to a
power of two (and kept within 2^-20..2^20): multiplying and dividing by a power of two is exact in
binary floating point, so the equalized float model computes the same numbers as before (outside
subnormals and overflow); the calibrated validation verdict checks that before anything is
quantized.  ``A``'s own weights lose nothing: they get one int8 scale per output channel anyway.

Pairs are equalized from the last to the first, so a layer that ends one pair and starts another
is balanced on its input side against weights already scaled on its output side.  New weights are
written under fresh names; nothing shared is modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import numpy_helper

from ..fold.ops import rule
from ..graph.attributes import float_attribute, int_attribute
from ..graph.tensors import tensor_values
from ..graph.walk import NameAllocator, drop_unread_initializers, input_slots
from .layers import Layer
from .ops import HOMOGENEOUS

MAX_EXPONENT = 20


@dataclass(frozen=True)
class Pair:
    """Two layers joined by an activation only ``second`` reads."""

    first: Layer
    second: Layer
    tensor: str  # the activation between (``second``'s data input)
    between: str  # the homogeneous op type, or "" when ``second`` reads ``first``'s output directly
    channel_axis: int  # channels of ``tensor``: 1 for convolutions, -1 for dense layers


def _channels_last(layer: Layer) -> bool:
    return rule(layer.op_type).kind.channels_last


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for t in graph.initializer:
        if t.name == name:
            return tensor_values(t)
    return None


def homogeneous(node: onnx.NodeProto, graph: onnx.GraphProto) -> bool:
    """``f(s x) = s f(x)`` for all ``s > 0``: the op types of :data:`.ops.HOMOGENEOUS`, a Clip only as ``max(x, 0)``."""
    if node.op_type not in HOMOGENEOUS or len(node.output) != 1:
        return False
    if node.op_type == "Clip":
        low = float_attribute(node, "min", -math.inf) if len(node.input) < 2 else None
        high = float_attribute(node, "max", math.inf) if len(node.input) < 3 else None
        if len(node.input) >= 2 and node.input[1]:
            value = _constant(graph, node.input[1])
            low = float(value) if value is not None and value.size == 1 else None
        if len(node.input) >= 3 and node.input[2]:
            value = _constant(graph, node.input[2])
            high = float(value) if value is not None and value.size == 1 else None
        return low == 0.0 and high == math.inf if low is not None and high is not None else False
    if node.op_type == "PRelu":
        return len(node.input) == 2 and _constant(graph, node.input[1]) is not None
    return True


def _output_channels(layer: Layer) -> int | None:
    if layer.op_type == "ConvTranspose":
        return int(layer.weight.shape[1]) if layer.groups == 1 else None
    return int(layer.weight.shape[layer.axis])


def _input_channels(layer: Layer) -> int:
    if layer.op_type == "Conv":
        return int(layer.weight.shape[1]) * layer.groups
    return int(layer.weight.shape[layer.input_axis])


def find_pairs(model: onnx.ModelProto, layers: list[Layer]) -> list[Pair]:
    """Every pair of layers equalization can balance, in graph order."""
    graph = model.graph
    readers = input_slots(graph.node)
    outputs = {o.name for o in graph.output}
    by_name = {l.name: l for l in layers}
    initializers = {t.name for t in graph.initializer}
    pairs = []
    for first in layers:
        if not first.output or first.output in outputs or (first.bias_name and first.bias_name not in initializers):
            continue
        read = readers.get(first.output, [])
        if len(read) != 1:
            continue
        node, slot = read[0]
        between, tensor = "", first.output
        if node.name not in by_name and homogeneous(node, graph) and slot == 0 and node.output[0] not in outputs:
            between, tensor = node.op_type, node.output[0]
            read = readers.get(tensor, [])
            if len(read) != 1:
                continue
            node, slot = read[0]
        second = by_name.get(node.name)
        if second is None or slot != 0 or not _compatible(first, second, node):
            continue
        pairs.append(Pair(first, second, tensor, between, -1 if _channels_last(first) else 1))
    return pairs


def _compatible(first: Layer, second: Layer, node: onnx.NodeProto) -> bool:
    if _channels_last(first) != _channels_last(second):
        return False
    if second.op_type == "Gemm" and int_attribute(node, "transA", 0):
        return False
    channels = _output_channels(first)
    return channels is not None and channels == _input_channels(second)


def input_channel_absmax(layer: Layer) -> np.ndarray:
    """The largest weight magnitude on each input channel of ``layer`` (grouped convolutions resolved)."""
    w = np.abs(np.asarray(layer.weight, dtype=np.float64))
    if layer.op_type == "Conv":
        g, per_group = layer.groups, w.shape[1]
        rows = w.reshape(g, w.shape[0] // g, per_group, -1).max(axis=(1, 3))  # [g, C/g]
        return rows.reshape(-1)
    moved = np.moveaxis(w, layer.input_axis, 0)
    return moved.reshape(moved.shape[0], -1).max(axis=1)


def choose_scales(activation_absmax: np.ndarray, weight_absmax: np.ndarray) -> np.ndarray:
    """``s_c = sqrt(a_c / w_c)`` rounded to a power of two; 1 where either is zero or not finite."""
    a = np.asarray(activation_absmax, dtype=np.float64)
    w = np.asarray(weight_absmax, dtype=np.float64)
    ok = (a > 0) & (w > 0) & np.isfinite(a) & np.isfinite(w)
    ratio = np.where(ok, a / np.where(ok, w, 1.0), 1.0)
    exponent = np.clip(np.round(0.5 * np.log2(ratio)), -MAX_EXPONENT, MAX_EXPONENT)
    exponent -= np.round(np.median(exponent[ok])) if ok.any() else 0.0  # a common factor changes nothing
    return np.where(ok, np.exp2(exponent), 1.0)


def _scaled_first(layer: Layer, s: np.ndarray, graph) -> tuple[np.ndarray, np.ndarray | None]:
    """``layer``'s weight and bias with output channel c divided by s_c."""
    shape = [1] * layer.weight.ndim
    shape[layer.axis] = -1
    weight = (layer.weight / s.reshape(shape).astype(layer.weight.dtype)).astype(layer.weight.dtype)
    bias = _constant(graph, layer.bias_name) if layer.bias_name else None
    if bias is not None:
        target = np.broadcast_to(bias, bias.shape[:-1] + (s.size,)) if bias.ndim and bias.shape[-1] == 1 else bias
        if target.ndim == 0:
            target = np.full(s.size, target)
        bias = (target / s.astype(target.dtype)).astype(target.dtype)
    return weight, bias


def _scaled_second(layer: Layer, s: np.ndarray) -> np.ndarray:
    """``layer``'s weight with input channel c multiplied by s_c."""
    w = layer.weight
    if layer.op_type == "Conv":
        g, m, per_group = layer.groups, w.shape[0], w.shape[1]
        factors = s.reshape(g, 1, per_group).repeat(m // g, axis=1).reshape(m, per_group)
        return (w * factors.reshape(factors.shape + (1,) * (w.ndim - 2)).astype(w.dtype)).astype(w.dtype)
    shape = [1] * w.ndim
    shape[layer.input_axis] = -1
    return (w * s.reshape(shape).astype(w.dtype)).astype(w.dtype)


def equalize(model: onnx.ModelProto, pairs: list[Pair], channel_absmax: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    """A copy of ``model`` with every pair balanced (see the module docstring), and the scales chosen, in pair order.

    ``channel_absmax``: the largest magnitude of each channel of each pair's activation over the
    calibration sets.
    """
    from .layers import find_layers

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    names = NameAllocator.for_model(copy)
    nodes = {n.name: n for n in graph.node}
    current = {l.name: l for l in find_layers(copy)}
    chosen: list[np.ndarray] = []
    for pair in reversed(pairs):
        first, second = current[pair.first.name], current[pair.second.name]
        s = choose_scales(channel_absmax[pair.tensor], input_channel_absmax(second))
        chosen.append(s)
        weight, bias = _scaled_first(first, s, graph)
        bias_name = _set(graph, names, nodes[first.name], 2, bias, first.bias_name) if bias is not None else first.bias_name
        current[first.name] = replace(first, weight=weight, bias_name=bias_name,
                                      weight_name=_set(graph, names, nodes[first.name], 1, weight, first.weight_name))
        second = current[second.name]
        weight = _scaled_second(second, s)
        current[second.name] = replace(second, weight=weight,
                                       weight_name=_set(graph, names, nodes[second.name], 1, weight, second.weight_name))
    drop_unread_initializers(graph)
    return copy, chosen[::-1]


def _set(graph: onnx.GraphProto, names: NameAllocator, node: onnx.NodeProto, slot: int, values: np.ndarray, base: str) -> str:
    name = names.fresh(f"{base}_equalized")
    graph.initializer.append(numpy_helper.from_array(values, name))
    node.input[slot] = name
    return name
