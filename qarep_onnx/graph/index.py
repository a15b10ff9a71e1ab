"""Read-only facts about one ONNX graph: producers, consumers, constants, ranks.

A region may only swallow a tensor whose every use it can see, so consumers here include the
nodes whose subgraphs (If/Loop/Scan bodies) read a tensor from the enclosing scope.  A constant is
an initializer that no graph input can override, a ``Constant`` node, or an ``Identity`` of either;
inside a subgraph every name the body defines itself (a formal input, an initializer, a node
output) shadows the enclosing graphs' tensors of the same name.  Numbers are read only when a
region that uses them is folded.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import onnx

from ..errors import InputModelError, Refused
from .attributes import int_attribute, ints_attribute, node_label
from .tensors import Constant, constant_node_value, loader
from .walk import graph_defined_names, node_reads

# Operators whose output is a constant when their input is (or, for Constant, always).
CONSTANT_OPS = ("Constant", "Identity", "Transpose")


def check_unique_definitions(graph: onnx.GraphProto, label: str) -> None:
    """Refuse a graph that defines a name twice: onnxruntime silently picks one of the copies."""
    initializers = Counter(t.name for t in graph.initializer)
    twice = sorted(name for name, n in initializers.items() if n > 1)
    if twice:
        raise InputModelError(
            f"{label}: initializer '{twice[0]}' is defined {initializers[twice[0]]} times; the model is not valid ONNX "
            "and which copy a runtime uses is not defined; remove the duplicates"
        )
    outputs = Counter(o for node in graph.node for o in node.output if o)
    twice = sorted(name for name, n in outputs.items() if n > 1)
    if twice:
        raise InputModelError(
            f"{label}: tensor '{twice[0]}' is the output of {outputs[twice[0]]} nodes; the model is not valid ONNX "
            "(each tensor has one producer)"
        )
    clash = sorted(set(outputs) & (set(initializers) | {i.name for i in graph.input}))
    if clash:
        raise InputModelError(
            f"{label}: tensor '{clash[0]}' is both a node output and a graph input or initializer; the model is not "
            "valid ONNX (each tensor has one producer)"
        )


class GraphIndex:
    """Producers, consumers and constants of one graph, with an optional enclosing scope.

    Constants: initializers, Constant nodes, and Identity or Transpose of a constant (its values
    transposed when read).

    ``overridable_initializers``: initializers listed as graph inputs can be fed by the caller
    (IR version 4 and later), so they are not constants.  ``variable`` names initializers that are
    not constants for another reason (trained by the model's ``training_info``), with the reason.
    ``read_elsewhere`` names tensors something outside the graph's nodes reads (the training
    algorithm): like graph outputs, they are never swallowed into a region or deleted.
    """

    def __init__(
        self,
        graph: onnx.GraphProto,
        outer_constants: dict[str, Constant] | None = None,
        *,
        label: str = "the main graph",
        overridable_initializers: bool = True,
        variable: dict[str, str] | None = None,
        read_elsewhere: set[str] | None = None,
        known_shapes: dict[str, tuple[int | None, ...]] | None = None,
    ) -> None:
        check_unique_definitions(graph, label)
        self.graph = graph
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for index, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = index
            for name in node_reads(node):
                self.consumers[name].append(index)
        self.graph_outputs = {o.name for o in graph.output}
        self.graph_inputs = {i.name for i in graph.input}
        self.overridable_initializers = overridable_initializers
        self.variable = dict(variable or {})
        self.read_elsewhere = frozenset(read_elsewhere or ())
        self._declared_shapes(known_shapes or {})
        self.constants = self._find_constants(outer_constants or {})

    # -- constants ---------------------------------------------------------------------------

    def _find_constants(self, outer: dict[str, Constant]) -> dict[str, Constant]:
        local = graph_defined_names(self.graph)
        constants = {name: c for name, c in outer.items() if name not in local}
        for init in self.graph.initializer:
            if init.name in self.variable:
                continue
            if init.name in self.graph_inputs and self.overridable_initializers:
                continue  # overridable by the caller: not a constant
            constants[init.name] = Constant(init.name, tuple(init.dims), init.data_type, loader(init, ""))
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
                continue
            if node.op_type == "Constant":
                value = constant_node_value(node)
                if value is not None:
                    shape, elem_type, load = value
                    constants[node.output[0]] = Constant(node.output[0], shape, elem_type, load)
            elif node.op_type == "Identity" and node.input and node.input[0] in constants:
                source = constants[node.input[0]]
                constants[node.output[0]] = Constant(node.output[0], source.shape, source.elem_type, source.load)
            elif node.op_type == "Transpose" and len(node.input) == 1 and node.input[0] in constants:
                # TorchScript without constant folding writes a Linear's weight as Transpose(W).
                source = constants[node.input[0]]
                try:
                    perm = ints_attribute(node, "perm", tuple(reversed(range(len(source.shape)))))
                except (Refused, InputModelError):
                    continue
                if sorted(perm) != list(range(len(source.shape))):
                    continue
                shape = tuple(source.shape[p] for p in perm)
                constants[node.output[0]] = Constant(
                    node.output[0], shape, source.elem_type, lambda load=source.load, perm=perm: load().transpose(perm)
                )
        return constants

    def constant(self, name: str) -> Constant | None:
        return self.constants.get(name)

    def why_not_constant(self, name: str) -> str:
        """Why a tensor is not a constant, in words (for refusals)."""
        if name in self.variable:
            return self.variable[name]
        if name in self.graph_inputs:
            if any(t.name == name for t in self.graph.initializer):
                return "is an initializer that a graph input of the same name can override"
            return "is a graph input"
        producer = self.producer.get(name)
        if producer is not None:
            node = self.nodes[producer]
            if node.op_type == "Constant" and any(a.ref_attr_name for a in node.attribute):
                return "is a Constant whose value the function's caller supplies"
            return f"is computed by {node.op_type} '{node_label(node)}'"
        return "is not defined in this graph"

    # -- uses --------------------------------------------------------------------------------

    def consumer_nodes(self, name: str) -> list[int]:
        return self.consumers.get(name, [])

    def is_single_use(self, name: str, consumer: int) -> bool:
        """True when ``consumer`` is the only node that reads ``name`` and it is no graph output."""
        if name in self.graph_outputs or name in self.read_elsewhere:
            return False
        return set(self.consumer_nodes(name)) == {consumer}

    # -- ranks -------------------------------------------------------------------------------

    def _declared_shapes(self, known_shapes: dict[str, tuple[int | None, ...]]) -> None:
        self._dims: dict[str, tuple[int | None, ...]] = dict(known_shapes)
        for info in list(self.graph.input) + list(self.graph.output) + list(self.graph.value_info):
            t = info.type.tensor_type
            if info.type.HasField("tensor_type") and t.HasField("shape"):
                self._dims[info.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                                              for d in t.shape.dim)

    def dim(self, name: str, axis: int) -> int | None:
        """A tensor's size on ``axis`` when declared or inferred."""
        dims = self._dims.get(name)
        return dims[axis] if dims is not None and -len(dims) <= axis < len(dims) else None

    def channels(self, name: str) -> int | None:
        """Channel count (axis 1) of a tensor when declared, or implied by a Conv that reads it."""
        declared = self.dim(name, 1)
        if declared is not None:
            return declared
        for i in self.consumer_nodes(name):
            node = self.nodes[i]
            if node.op_type == "Conv" and node.input[0] == name and len(node.input) > 1:
                weight = self.constants.get(node.input[1])
                if weight is not None and len(weight.shape) > 1:
                    try:
                        return weight.shape[1] * int_attribute(node, "group", 1, minimum=1)
                    except Refused:
                        return None
        return None

    def rank(self, name: str) -> int | None:
        """Rank of a tensor when declared or inferred, or implied by a Conv that reads or writes it."""
        if name in self._dims:
            return len(self._dims[name])
        related = [self.nodes[i] for i in self.consumer_nodes(name)]
        if name in self.producer:
            related.append(self.nodes[self.producer[name]])
        for node in related:
            if node.op_type == "Conv" and len(node.input) > 1:
                weight = self.constants.get(node.input[1])
                if weight is not None:
                    return len(weight.shape)
        return None
