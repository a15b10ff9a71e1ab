"""One onnxruntime session that measures every candidate: Q/DQ pairs switched on and off by inputs.

The sensitivity analysis measures dozens of candidate models that differ only in which layers are
in int8.  Writing each one and starting a session for it is what made the analysis slow.  So one
*switch model* holds every Q/DQ pair of the placement, each behind ``Where(switch, dequantized,
float)``; a boolean graph input per distinct ``requires`` set of :class:`~.placement.Site` (a layer
alone, a residual pair's fused layer, the layers a flow op feeds) turns it on.  A candidate is a
choice of switches fed with the input set; the session, its weights and the activation scales are
built once.

It computes what the written Q/DQ model (:mod:`.qdq`) computes, bit for bit: the same
``QuantizeLinear``/``DequantizeLinear`` nodes with the same scales, the same int8 weights (or the
same weight ``QuantizeLinear`` with ``weights="float"``), and ``Where`` selects values without
touching them.  With ``float_precision="fp16"`` a layer left in float reads its input, weight and
bias rounded to float16 and its output is rounded to float16, as :mod:`.precision` does to a written
model: what TensorRT's FP16 kernels store for the layers it does not run in int8.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..runtime.inputs import InputSet
from ..runtime.providers import ProviderChoice, session
from .calibrate import run_sets
from .layers import Layer
from .placement import Placement
from .precision import rounded_fp16
from .qdq import QDQWriter


class SwitchModel:
    """The model with every pair behind a switch, and its session."""

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

    def _switch(self, graph: onnx.GraphProto, writer: QDQWriter, requires: frozenset[str]) -> str:
        if requires not in self.switches:
            name = writer.names.fresh("int8_switch")
            graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, []))
            self.switches[requires] = name
        return self.switches[requires]

    def _build(self, prepared: onnx.ModelProto, limits, weights: str, precision: str) -> onnx.ModelProto:
        copy = onnx.ModelProto()
        copy.CopyFrom(prepared)
        graph = copy.graph
        writer = QDQWriter.on(graph)
        nodes = {n.name: n for n in graph.node}
        dequantized: dict[tuple[str, str], str] = {}  # (tensor, first consumer) -> its fake-quantized value
        for site in self.placement.sites:
            key = self.placement.key(site.tensor)
            if (site.tensor, key) not in dequantized:
                dequantized[(site.tensor, key)] = writer.activation(site.tensor, site.consumer, writer.scale(key, limits[key]))
            on = self._switch(graph, writer, site.requires)
            source = dequantized[(site.tensor, key)]
            if site.role == "layer" and precision == "fp16":
                off = _cast16(writer, site.consumer, site.tensor)
            else:
                off = site.tensor
            nodes[site.consumer].input[site.slot] = writer.node(site.consumer, "Where", [on, source, off], f"{site.tensor}_switched")
        for layer in self.layers:
            self._weight(graph, writer, nodes[layer.name], layer, weights, precision)
        writer.finish()
        return copy

    def _weight(self, graph, writer: QDQWriter, node: onnx.NodeProto, layer: Layer, weights: str, precision: str) -> None:
        on = self._switch(graph, writer, frozenset({layer.name}))
        dq = writer.weight(layer, weights)
        off = layer.weight_name
        if precision == "fp16":
            off = writer.constant(f"{layer.weight_name}_fp16", rounded_fp16(layer.weight))
            if layer.bias_name:
                bias = _initializer(graph, layer.bias_name)
                if bias is not None:
                    b16 = writer.constant(f"{layer.bias_name}_fp16", rounded_fp16(bias))
                    node.input[2] = writer.node(layer.name, "Where", [on, layer.bias_name, b16], f"{layer.bias_name}_switched")
            raw = writer.names.fresh(f"{node.output[0]}_fp32")
            final, node.output[0] = node.output[0], raw
            half = writer.node(layer.name, "Cast", [raw], f"{final}_to_fp16", after=True, to=onnx.TensorProto.FLOAT16)
            back = writer.node(layer.name, "Cast", [half], f"{final}_rounded", after=True, to=onnx.TensorProto.FLOAT)
            writer.node(layer.name, "Where", [on, raw, back], f"{final}_switch", after=True, output=final)
        node.input[1] = writer.node(layer.name, "Where", [on, dq, off], f"{layer.weight_name}_switched")

    def feeds(self, quantized: frozenset[str]) -> dict[str, np.ndarray]:
        """The switch inputs for a candidate with exactly ``quantized`` layers in int8."""
        return {name: np.array(requires <= quantized) for requires, name in self.switches.items()}

    def run(self, quantized: frozenset[str], input_sets: list[InputSet], label: str = "the INT8 model") -> list[dict[str, np.ndarray]]:
        """The model's outputs for each input set with exactly ``quantized`` layers in int8."""
        switches = self.feeds(quantized)
        sets = [InputSet({**s.feeds, **switches}, s.description) for s in input_sets]
        return [values for _, values in run_sets(self.session, self.output_names, sets, label)]


def _cast16(writer: QDQWriter, before: str, tensor: str) -> str:
    half = writer.node(before, "Cast", [tensor], f"{tensor}_to_fp16", to=onnx.TensorProto.FLOAT16)
    return writer.node(before, "Cast", [half], f"{tensor}_rounded", to=onnx.TensorProto.FLOAT)


def _initializer(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None
