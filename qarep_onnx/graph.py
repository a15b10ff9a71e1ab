"""Read-only facts about one ONNX graph: producers, consumers, constants, ranks, attributes.

A region may only swallow a tensor whose every use it can see, so consumers here include the
nodes whose subgraphs (If/Loop/Scan bodies) read a tensor from the enclosing scope.  A constant is
an initializer that no graph input can override, a ``Constant`` node, or an ``Identity`` of either;
its numbers are read only when a region that uses it is folded.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}


@dataclass(frozen=True)
class Constant:
    """A constant tensor: its shape and element type now, its values on demand."""

    name: str
    shape: tuple[int, ...]
    elem_type: int
    load: Callable[[], np.ndarray]


def node_label(node: onnx.NodeProto) -> str:
    """A node's name, or a description of it when it has none (for messages and reports)."""
    return node.name or f"<{node.op_type} -> {node.output[0] if node.output else '?'}>"


def attribute(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _constant_node_value(node: onnx.NodeProto) -> tuple[tuple[int, ...], int, Callable[[], np.ndarray]] | None:
    """Shape, element type and loader of a Constant node's value, or None for sparse/strings."""
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            t = attr.t
            return tuple(t.dims), t.data_type, lambda t=t: numpy_helper.to_array(t)
        if attr.name == "value_float":
            return (), onnx.TensorProto.FLOAT, lambda v=attr.f: np.array(v, np.float32)
        if attr.name == "value_floats":
            values = list(attr.floats)
            return (len(values),), onnx.TensorProto.FLOAT, lambda v=values: np.array(v, np.float32)
    return None


def subgraph_outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph (recursively) reads but does not define: its uses of the outer scope."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for sub in node_subgraphs(node):
            used |= subgraph_outer_names(sub)
        defined.update(node.output)
    return used - defined


def node_subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


class GraphIndex:
    """Producers, consumers and constants of one graph, with an optional enclosing scope."""

    def __init__(self, graph: onnx.GraphProto, outer_constants: dict[str, Constant] | None = None) -> None:
        self.graph = graph
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for index, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = index
            reads = {n for n in node.input if n}
            for sub in node_subgraphs(node):
                reads |= subgraph_outer_names(sub)
            for name in reads:
                self.consumers[name].append(index)
        self.graph_outputs = {o.name for o in graph.output}
        self.graph_inputs = {i.name for i in graph.input}
        self._declared_shapes()
        self.constants = self._find_constants(outer_constants or {})

    # -- constants ---------------------------------------------------------------------------

    def _find_constants(self, outer: dict[str, Constant]) -> dict[str, Constant]:
        constants = {name: c for name, c in outer.items() if name not in self.producer}
        for init in self.graph.initializer:
            if init.name in self.graph_inputs:
                constants.pop(init.name, None)  # overridable by the caller: not a constant
                continue
            constants[init.name] = Constant(
                init.name, tuple(init.dims), init.data_type, lambda t=init: numpy_helper.to_array(t)
            )
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
                continue
            if node.op_type == "Constant":
                value = _constant_node_value(node)
                if value is not None:
                    shape, elem_type, load = value
                    constants[node.output[0]] = Constant(node.output[0], shape, elem_type, load)
            elif node.op_type == "Identity" and node.input and node.input[0] in constants:
                source = constants[node.input[0]]
                constants[node.output[0]] = Constant(node.output[0], source.shape, source.elem_type, source.load)
        return constants

    def constant(self, name: str) -> Constant | None:
        return self.constants.get(name)

    # -- uses --------------------------------------------------------------------------------

    def consumer_nodes(self, name: str) -> list[int]:
        return self.consumers.get(name, [])

    def is_single_use(self, name: str, consumer: int) -> bool:
        """True when ``consumer`` is the only node that reads ``name`` and it is no graph output."""
        return name not in self.graph_outputs and set(self.consumer_nodes(name)) == {consumer}

    # -- ranks -------------------------------------------------------------------------------

    def _declared_shapes(self) -> None:
        self._ranks: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        for info in list(self.graph.input) + list(self.graph.output) + list(self.graph.value_info):
            t = info.type.tensor_type
            if info.type.HasField("tensor_type") and t.HasField("shape"):
                dims = t.shape.dim
                self._ranks[info.name] = len(dims)
                if len(dims) > 1 and dims[1].HasField("dim_value"):
                    self._channels[info.name] = dims[1].dim_value

    def channels(self, name: str) -> int | None:
        """Channel count (axis 1) of a tensor when declared, or implied by a Conv that reads it."""
        if name in self._channels:
            return self._channels[name]
        for i in self.consumer_nodes(name):
            node = self.nodes[i]
            if node.op_type == "Conv" and node.input[0] == name and len(node.input) > 1:
                weight = self.constants.get(node.input[1])
                if weight is not None and len(weight.shape) > 1:
                    return weight.shape[1] * int(attribute(node, "group", 1))
        return None

    def rank(self, name: str) -> int | None:
        """Rank of a tensor when declared, or implied by a Conv that reads or writes it."""
        if name in self._ranks:
            return self._ranks[name]
        related = [self.nodes[i] for i in self.consumer_nodes(name)]
        if name in self.producer:
            related.append(self.nodes[self.producer[name]])
        for node in related:
            if node.op_type == "Conv" and len(node.input) > 1:
                weight = self.constants.get(node.input[1])
                if weight is not None:
                    return len(weight.shape)
        return None
