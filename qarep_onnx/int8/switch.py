"""One onnxruntime session that measures every candidate: each layer and each Q/DQ pair behind a switch.

The sensitivity analysis measures dozens of candidate models that differ only in which layers are
in int8.  Writing each one and starting a session for it is what made the analysis slow.  So one
*switch model* holds both forms of everything the candidates can differ in, each behind an ``If``
on a boolean graph input (one per distinct ``requires`` set of :class:`~.placement.Site`: a layer, a
residual pair's fused layer, the layers a flow op feeds):

* every layer: ``If(switch, then: layer(DQ(Q(x)), DQ(int8 weight), bias), else: layer(x, weight, bias))``;
* every other pair (residual, flow): ``If(switch, then: DQ(Q(t)), else: t)`` in front of its reader.

A candidate is a choice of switches fed with the input set; the session, its weights and the
activation scales are built once.  ``If`` runs only the branch taken, so a layer left in float
costs what it costs in the float model, and computes with the very kernels the written model uses:
the switch model computes what the written Q/DQ model (:mod:`.qdq`) computes, bit for bit (the
same ``QuantizeLinear``/``DequantizeLinear`` nodes and scales, the same int8 weights, or the same
weight ``QuantizeLinear`` with ``weights="float"``).  With ``float_precision="fp16"`` the float
branch of a layer reads its input, weight and bias rounded to float16 and rounds its output to
float16, as :mod:`.precision` does to a written model: what TensorRT's FP16 kernels store for the
layers it does not run in int8.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..runtime.inputs import InputSet
from ..runtime.providers import ProviderChoice
from ..runtime.sessions import session
from .calibrate import run_sets
from .layers import Layer
from .placement import Placement
from .precision import rounded_fp16
from .qdq import QDQWriter, quantized_weight


class _Branch:
    """The nodes of one ``If`` branch; names come from the outer graph's allocator (subgraphs may not shadow)."""

    def __init__(self, writer: QDQWriter) -> None:
        self.writer = writer
        self.nodes: list[onnx.NodeProto] = []

    def add(self, op: str, inputs: list[str], base: str, **attributes) -> str:
        out = self.writer.names.fresh(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.writer.names.fresh(f"{base}_node"), **attributes))
        return out

    def graph(self, name: str, output: str) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, [], [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)])


class SwitchModel:
    """The model with every layer and pair behind a switch, and its session."""

    def __init__(
        self,
        prepared: onnx.ModelProto,
        layers: list[Layer],
        placement: Placement,
        limits: dict[str, float],
        choice: ProviderChoice,
        weights: str = "int8",
        float_precision: str = "fp32",
    ) -> None:
        self.layers = layers
        self.placement = placement
        self.switches: dict[frozenset[str], str] = {}
        self.model = self._build(prepared, limits, weights, float_precision)
        self.session = session(self.model, choice, optimize_graph=False)
        self.output_names = [o.name for o in prepared.graph.output]

    def _switch(self, writer: QDQWriter, requires: frozenset[str]) -> str:
        if requires not in self.switches:
            name = writer.names.fresh("int8_switch")
            writer.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, []))
            self.switches[requires] = name
        return self.switches[requires]

    def _build(self, prepared: onnx.ModelProto, limits, weights: str, precision: str) -> onnx.ModelProto:
        copy = onnx.ModelProto()
        copy.CopyFrom(prepared)
        writer = QDQWriter.on(copy)
        nodes = {n.name: n for n in copy.graph.node}
        scale = {key: writer.scale(key, limit) for key, limit in limits.items()}
        for site in self.placement.sites:
            if site.role == "layer":
                continue
            on = self._switch(writer, site.requires)
            quantized, kept = _Branch(writer), _Branch(writer)
            dq = _fake_quantized(quantized, site.tensor, scale[self.placement.key(site.tensor)], writer.zero_point())
            same = kept.add("Identity", [site.tensor], f"{site.tensor}_float")
            out = writer.node(site.consumer, "If", [on], f"{site.tensor}_switched",
                              then_branch=quantized.graph("quantized", dq), else_branch=kept.graph("float", same))
            nodes[site.consumer].input[site.slot] = out
        for layer in self.layers:
            node = nodes[layer.name]
            key = self.placement.key(layer.activation)
            branches = (self._quantized(writer, node, layer, scale[key], weights), self._float(writer, node, layer, precision))
            on = self._switch(writer, frozenset({layer.name}))
            switched = helper.make_node("If", [on], list(node.output[:1]), name=node.name,
                                        then_branch=branches[0], else_branch=branches[1])
            node.CopyFrom(switched)
        writer.finish()
        return copy

    def _quantized(self, writer: QDQWriter, node: onnx.NodeProto, layer: Layer, scale: str, weights: str) -> onnx.GraphProto:
        branch = _Branch(writer)
        x = _fake_quantized(branch, node.input[0], scale, writer.zero_point())
        q, s = quantized_weight(layer)
        w_scale = writer.constant(f"{layer.weight_name}_scale", s)
        w_zero = writer.constant(f"{layer.weight_name}_zero_point", np.zeros(s.shape, np.int8))
        source = writer.constant(f"{layer.weight_name}_int8", q) if weights == "int8" else branch.add(
            "QuantizeLinear", [node.input[1], w_scale, w_zero], f"{layer.weight_name}_quantized", axis=layer.axis)
        w = branch.add("DequantizeLinear", [source, w_scale, w_zero], f"{layer.weight_name}_dequantized", axis=layer.axis)
        out = _layer(branch, node, [x, w] + list(node.input[2:]), f"{node.output[0]}_int8")
        return branch.graph("int8", out)

    def _float(self, writer: QDQWriter, node: onnx.NodeProto, layer: Layer, precision: str) -> onnx.GraphProto:
        branch = _Branch(writer)
        inputs = list(node.input)
        if precision == "fp16":
            inputs[0] = _rounded(branch, inputs[0])
            inputs[1] = writer.constant(f"{layer.weight_name}_fp16", rounded_fp16(layer.weight))
            bias = _initializer(writer.graph, layer.bias_name) if layer.bias_name else None
            if bias is not None:
                inputs[2] = writer.constant(f"{layer.bias_name}_fp16", rounded_fp16(bias))
        out = _layer(branch, node, inputs, f"{node.output[0]}_float")
        if precision == "fp16":
            out = _rounded(branch, out)
        return branch.graph("float", out)

    def feeds(self, quantized: frozenset[str]) -> dict[str, np.ndarray]:
        """The switch inputs for a candidate with exactly ``quantized`` layers in int8."""
        return {name: np.array(requires <= quantized) for requires, name in self.switches.items()}

    def run(self, quantized: frozenset[str], input_sets: list[InputSet], label: str = "the INT8 model") -> list[dict[str, np.ndarray]]:
        """The model's outputs for each input set with exactly ``quantized`` layers in int8."""
        switches = self.feeds(quantized)
        sets = [InputSet({**s.feeds, **switches}, s.description) for s in input_sets]
        return [values for _, values in run_sets(self.session, self.output_names, sets, label)]


def _fake_quantized(branch: _Branch, tensor: str, scale: str, zero: str) -> str:
    q = branch.add("QuantizeLinear", [tensor, scale, zero], f"{tensor}_quantized")
    return branch.add("DequantizeLinear", [q, scale, zero], f"{tensor}_dequantized")


def _layer(branch: _Branch, node: onnx.NodeProto, inputs: list[str], base: str) -> str:
    out = branch.add(node.op_type, inputs, base)
    branch.nodes[-1].attribute.extend(node.attribute)
    return out


def _rounded(branch: _Branch, tensor: str) -> str:
    half = branch.add("Cast", [tensor], f"{tensor}_to_fp16", to=onnx.TensorProto.FLOAT16)
    return branch.add("Cast", [half], f"{tensor}_rounded", to=onnx.TensorProto.FLOAT)


def _initializer(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None
