"""Write the Q/DQ model in the form TensorRT's explicit quantization takes.

TensorRT quantizes symmetrically (zero point 0), activations with one scale per tensor and weights
with one scale per output channel, and builds int8 kernels where Q/DQ nodes say so.  So:

* every activation site of :mod:`.placement` gets its own ``QuantizeLinear -> DequantizeLinear``
  pair (int8, zero point 0, scale = calibrated threshold / 127), read by that one node input;
* every quantized layer's weight is dequantized per output channel (axis from :mod:`.layers`):
  stored as int8 behind a ``DequantizeLinear`` (``weights="int8"``: 4x smaller, what TensorRT 10
  documents for quantized weights), or stored in float behind a ``QuantizeLinear ->
  DequantizeLinear`` pair (``weights="float"``: TensorRT quantizes it at build time with that
  scale; older TensorRT parsers stopped on an int8 initializer feeding a DequantizeLinear, "only
  activation types allowed as input to this layer");
* biases stay float: TensorRT adds them itself (an int32 bias behind a DequantizeLinear is where
  TensorRT conversions stopped, onnxruntime issue 17738);
* every other reader of a quantized tensor, and a graph output, keeps reading the float value.

Nodes are written topologically sorted (each pair right before the node that reads it), as the
ONNX specification and TensorRT's parser require; the result passes ``onnx.checker`` with
``full_check``.  The int8 weights are computed here exactly as ``QuantizeLinear`` computes them
(float32 division, rounding half to even, clipping to [-127, 127]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph.walk import NameAllocator, drop_unread_initializers, topologically_sorted
from .layers import Layer
from .ops import QDQ_OPS
from .placement import Placement, Site
from .report import QDQLayout
from .sqnr import QMAX, channel_absmax, symmetric_scale

WEIGHT_FORMS = ("int8", "float")


def weight_scale(layer: Layer) -> np.ndarray:
    """One float32 scale per output channel: the channel's largest magnitude / 127."""
    return symmetric_scale(channel_absmax(layer.weight, layer.axis)).astype(np.float32)


def quantized_weight(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, per-channel float32 scale) as QuantizeLinear computes them from the float32 weight."""
    scale = weight_scale(layer)
    shape = [1] * layer.weight.ndim
    shape[layer.axis] = -1
    w = np.asarray(layer.weight, dtype=np.float32)
    q = np.clip(np.rint(w / scale.reshape(shape)), -QMAX, QMAX).astype(np.int8)
    return q, scale


@dataclass
class QDQWriter:
    """Adds Q/DQ pairs to one graph; collects new nodes by the node they must precede."""

    graph: onnx.GraphProto
    names: NameAllocator
    before: dict[str, list[onnx.NodeProto]]
    after: dict[str, list[onnx.NodeProto]]
    scales: dict[str, str]  # scale key -> initializer name
    zero: str = ""

    @classmethod
    def on(cls, model: onnx.ModelProto) -> QDQWriter:
        """A writer on the model's main graph, whose new names collide with no name anywhere in the model."""
        return cls(model.graph, NameAllocator.for_model(model), {}, {}, {})

    def constant(self, base: str, values: np.ndarray) -> str:
        name = self.names.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(values, name))
        return name

    def zero_point(self) -> str:
        if not self.zero:
            self.zero = self.constant("qdq_zero_point", np.array(0, np.int8))
        return self.zero

    def scale(self, key: str, limit: float) -> str:
        if key not in self.scales:
            self.scales[key] = self.constant(f"{key}_scale", np.array(symmetric_scale(limit), np.float32))
        return self.scales[key]

    def node(self, anchor: str, op: str, inputs: list[str], base: str, *, after: bool = False, output: str = "",
             **attributes) -> str:
        """A new node placed right before (or ``after``) the node named ``anchor``; returns its output."""
        out = output or self.names.fresh(base)
        made = helper.make_node(op, inputs, [out], name=self.names.fresh(f"{base}_node"), **attributes)
        (self.after if after else self.before).setdefault(anchor, []).append(made)
        return out

    def activation(self, site_tensor: str, consumer: str, scale: str) -> str:
        """Q -> DQ of ``site_tensor`` placed before ``consumer``; returns the dequantized tensor."""
        q = self.node(consumer, "QuantizeLinear", [site_tensor, scale, self.zero_point()], f"{site_tensor}_quantized")
        return self.node(consumer, "DequantizeLinear", [q, scale, self.zero_point()], f"{site_tensor}_dequantized")

    def weight(self, layer: Layer, form: str) -> str:
        """The layer's weight dequantized per output channel; returns the tensor the layer reads."""
        q, scale = quantized_weight(layer)
        scale_name = self.constant(f"{layer.weight_name}_scale", scale)
        zero = self.constant(f"{layer.weight_name}_zero_point", np.zeros(scale.shape, np.int8))
        if form == "int8":
            source = self.constant(f"{layer.weight_name}_int8", q)
        else:
            source = self.node(layer.name, "QuantizeLinear", [layer.weight_name, scale_name, zero],
                               f"{layer.weight_name}_quantized", axis=layer.axis)
        return self.node(layer.name, "DequantizeLinear", [source, scale_name, zero], f"{layer.weight_name}_dequantized",
                         axis=layer.axis)

    def finish(self) -> None:
        """Put the new nodes in place (each before its reader), sort, and drop initializers nothing reads."""
        nodes = []
        for node in self.graph.node:
            nodes.extend(self.before.get(node.name, []))
            nodes.append(node)
            nodes.extend(self.after.get(node.name, []))
        del self.graph.node[:]
        available = {t.name for t in self.graph.initializer} | {i.name for i in self.graph.input}
        self.graph.node.extend(topologically_sorted(nodes, available))
        drop_unread_initializers(self.graph)


def build_qdq(
    prepared: onnx.ModelProto,
    layers: list[Layer],
    placement: Placement,
    limits: dict[str, float],
    quantize: Iterable[str],
    weights: str = "int8",
) -> onnx.ModelProto:
    """A Q/DQ copy of ``prepared`` with the layers named in ``quantize`` in int8 (see the module docstring)."""
    chosen = frozenset(quantize)
    copy = onnx.ModelProto()
    copy.CopyFrom(prepared)
    writer = QDQWriter.on(copy)
    nodes = {n.name: n for n in copy.graph.node}
    for site in placement.active(chosen):
        dq = writer.activation(site.tensor, site.consumer, writer.scale(placement.key(site.tensor), limits[placement.key(site.tensor)]))
        nodes[site.consumer].input[site.slot] = dq
    for layer in layers:
        if layer.name in chosen:
            nodes[layer.name].input[1] = writer.weight(layer, weights)
    writer.finish()
    return copy


def _dequantized_sources(graph: onnx.GraphProto) -> dict[str, str]:
    """DequantizeLinear output -> what it dequantizes (the float tensor behind its QuantizeLinear, or an int8 constant)."""
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {t.name for t in graph.initializer}
    sources = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not node.input:
            continue
        q = producer.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input:
            sources[node.output[0]] = q.input[0]
        elif node.input[0] in initializers:
            sources[node.output[0]] = node.input[0]
    return sources


def qdq_layout(model: onnx.ModelProto, layer_names: Iterable[str], sites: Iterable[Site] = ()) -> QDQLayout:
    """Read back which layers have Q/DQ on both their data input and their weight, and count the pairs.

    A pair is one DequantizeLinear (with its QuantizeLinear, or an int8 weight in front of it).
    """
    graph = model.graph
    sources = _dequantized_sources(graph)
    nodes = {n.name: n for n in graph.node}
    quantized, floating = [], []
    for name in layer_names:
        node = nodes.get(name)
        if node is not None and len(node.input) > 1 and node.input[0] in sources and node.input[1] in sources:
            quantized.append(name)
        else:
            floating.append(name)
    pairs = sum(1 for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in sources)
    roles: dict[str, int] = {}
    for site in sites:
        roles[site.role] = roles.get(site.role, 0) + 1
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    int8_weights = sum(1 for n in graph.node if n.op_type == "DequantizeLinear" and n.input and n.input[0] in int8)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return QDQLayout(pairs, tuple(quantized), tuple(floating), opset, roles.get("residual", 0), roles.get("flow", 0),
                     int8_weights > 0, sum(1 for n in graph.node if n.op_type in QDQ_OPS))
