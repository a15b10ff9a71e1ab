"""Replace folded regions in a graph, in place.

Each region's root node becomes the nodes its kind emits (same position, same output name: one
Conv, ConvTranspose or Gemm, or a MatMul with an Add after it), the region's other nodes are
deleted, and so are the constants (initializers, ``Constant`` nodes and ``Identity`` or
``Transpose`` of constants) that only those nodes read.  New weights get fresh names; shared
initializers are never modified.  Everything else in the graph is left exactly as it was.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph.index import CONSTANT_OPS, GraphIndex
from ..graph.walk import NameAllocator, graph_defined_names, node_reads, remove_unread
from .algebra import FormValues
from .forms import Region


class GraphRewriter:
    """Collects replacements for one graph, then applies them all at once."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        index: GraphIndex,
        names: NameAllocator,
        constants_as_nodes: bool = False,
        initializers_are_inputs: bool = False,
    ) -> None:
        self.graph = graph
        self.index = index
        self.names = names
        # Function bodies have no initializers: their new weights become Constant nodes in front.
        self.constants_as_nodes = constants_as_nodes
        # IR version 3: every initializer is also a graph input, new ones included.
        self.initializers_are_inputs = initializers_are_inputs
        self._doomed: set[int] = set()
        self._before: dict[int, list[onnx.NodeProto]] = {}  # nodes to insert in front of a root (a MatMul before its Add)
        self._released: set[str] = set()  # tensors the replaced nodes read
        self._function_constants: list[onnx.TensorProto] = []

    @property
    def doomed(self) -> set[int]:
        """Indices of the nodes that commit() deletes."""
        return self._doomed

    def replace(self, region: Region, values: FormValues) -> list[onnx.NodeProto]:
        """Make the region's root node the operator ``values`` describe; delete the region's other nodes.

        Returns the nodes that now compute the root's output, in order (the last one computes it).
        """
        form, root_index = region.form, region.root_node
        root = self.graph.node[root_index]
        name = self.names.fresh(f"{root.name or root.output[0]}_folded")
        emitted = values.geometry.kind.emit(values, form.source, root.output[0], name, self.names, form.rank)
        for constant_name, array in emitted.constants:
            self._add_constant(constant_name, array)
        *before, last = emitted.nodes
        if before:
            self._before[root_index] = before
        self._doomed.update(i for i in region.nodes if i != root_index)
        for i in region.nodes:
            self._released.update(t for t in self.index.nodes[i].input if t)
        for i, tensor in region.rewires:
            self.graph.node[i].input[0] = tensor
        root.CopyFrom(last)
        return before + [root]

    def _add_constant(self, name: str, values: np.ndarray) -> None:
        if self.constants_as_nodes:
            self._function_constants.append(numpy_helper.from_array(values, name))
            return
        # Built in place: going through from_array and extend() would copy the bytes twice more.
        tensor = self.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(values.dtype)
        tensor.dims.extend(values.shape)
        tensor.raw_data = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
        if self.initializers_are_inputs:
            self.graph.input.append(helper.make_tensor_value_info(name, tensor.data_type, list(values.shape)))

    def commit(self, released_by_subgraphs: set[str] = frozenset()) -> set[str]:
        """Delete replaced nodes and the constants only they read; add the new weights.

        ``released_by_subgraphs`` are outer-scope names that folds inside this graph's subgraphs
        stopped reading.  Returns the names released here that this graph does not define: the
        enclosing graph's to clean up.
        """
        graph, index = self.graph, self.index
        defined = graph_defined_names(graph)
        candidates = self._released | set(released_by_subgraphs)
        removed = {o for i in self._doomed for o in index.nodes[i].output}
        if self._before or self._function_constants:
            # Function bodies: the new weights become Constant nodes in front; a MatMul goes before its Add.
            nodes = [helper.make_node("Constant", [], [t.name], name=t.name, value=t) for t in self._function_constants]
            for position, node in enumerate(graph.node):
                if position not in self._doomed:
                    nodes += self._before.get(position, [])
                    nodes.append(node)
            del graph.node[:]
            graph.node.extend(nodes)
        else:  # deleting in place copies no node
            for i in sorted(self._doomed, reverse=True):
                del graph.node[i]
        # Constant nodes, and Identity or Transpose of constants, that fed only removed nodes go too (chains included).
        removed |= remove_unread(
            graph.node, lambda n: n.op_type in CONSTANT_OPS and all(o in index.constants for o in n.output),
            set(index.graph_outputs), candidates,
        )
        used = set(index.graph_outputs).union(*(node_reads(n) for n in graph.node))
        initializer_names = {t.name for t in graph.initializer}
        inputs = index.graph_inputs - initializer_names if self.initializers_are_inputs else index.graph_inputs
        protected = used | inputs | index.graph_outputs | set(index.read_elsewhere)
        stale = [k for k, t in enumerate(graph.initializer) if t.name in candidates and t.name not in protected]
        for k in reversed(stale):
            removed.add(graph.initializer[k].name)
            del graph.initializer[k]
        if self.initializers_are_inputs:
            _drop_named(graph.input, removed)
        _drop_named(graph.value_info, removed)
        return {t for t in candidates if t not in defined}


def _drop_named(entries, names: set[str]) -> None:
    """Delete the entries (ValueInfoProto) of a repeated field whose name is in ``names``."""
    for k in reversed([k for k, v in enumerate(entries) if v.name in names]):
        del entries[k]
