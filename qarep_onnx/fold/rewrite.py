"""Replace folded regions in a graph, in place.

Each region's root node becomes the single operator (same position, same output name: a Conv, a
ConvTranspose, a Gemm, or a MatMul with an Add after it), the region's other nodes are deleted,
and so are the constants (initializers, ``Constant`` and ``Identity`` nodes) that only those nodes
read.  New weights get fresh names; shared initializers are never
modified.  Everything else in the graph is left exactly as it was.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph.index import GraphIndex
from ..graph.walk import NameAllocator, graph_defined_names, node_reads


def make_conv(
    name: str, x: str, weight: str, bias: str, output: str, kernel, stride, dilation, pads, groups: int
) -> onnx.NodeProto:
    return helper.make_node(
        "Conv",
        [x, weight, bias],
        [output],
        name=name,
        kernel_shape=list(kernel),
        strides=list(stride),
        dilations=list(dilation),
        pads=list(pads),
        group=int(groups),
    )


def conv_transpose_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """Output-channel-first ``(out, in / groups, *kernel)`` back to ONNX's ``(in, out / groups, *kernel)``."""
    cout, cin_per_group, *kernel = weight.shape
    grouped = weight.reshape(groups, cout // groups, cin_per_group, *kernel).swapaxes(1, 2)
    return np.ascontiguousarray(grouped.reshape(groups * cin_per_group, cout // groups, *kernel))


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

    def replace(
        self, root_index: int, nodes: tuple[int, ...], x: str, weight: np.ndarray, bias: np.ndarray, geometry,
        x_rank: int | None = None,
    ) -> tuple[str, str]:
        """Make node ``root_index`` the one operator ``x -> (weight, bias)``; delete the other ``nodes``.

        Returns the name and op type of the node that now computes the root's output.  A dense form
        becomes ``Gemm(x, W, b, transB=1)`` on a 2-D input, else ``MatMul(x, W^T)`` followed by
        ``Add(., b)`` unless the bias is zero.
        """
        root = self.graph.node[root_index]
        base = root.name or root.output[0]
        name = self.names.fresh(f"{base}_folded")
        output = root.output[0]
        kind = geometry.kind
        if kind == "dense" and x_rank != 2:
            w_name = self.names.fresh(f"{name}.weight")
            self._add_constant(w_name, np.ascontiguousarray(weight.T))
            if np.any(bias != 0):
                product = self.names.fresh(f"{name}.product")
                matmul = helper.make_node("MatMul", [x, w_name], [product], name=self.names.fresh(f"{name}.matmul"))
                b_name = self.names.fresh(f"{name}.bias")
                self._add_constant(b_name, bias)
                self._before[root_index] = [matmul]
                node = helper.make_node("Add", [product, b_name], [output], name=name)
            else:
                node = helper.make_node("MatMul", [x, w_name], [output], name=name)
        else:
            w_name = self.names.fresh(f"{name}.weight")
            b_name = self.names.fresh(f"{name}.bias")
            self._add_constant(b_name, bias)
            if kind == "dense":
                self._add_constant(w_name, weight)
                attributes = {"transB": 1} | ({"transA": 1} if geometry.transposed_input else {})
                node = helper.make_node("Gemm", [x, w_name, b_name], [output], name=name, **attributes)
            elif kind == "conv_transpose":
                self._add_constant(w_name, conv_transpose_weight(weight, geometry.groups))
                node = helper.make_node(
                    "ConvTranspose", [x, w_name, b_name], [output], name=name, kernel_shape=list(geometry.kernel),
                    strides=list(geometry.stride), dilations=list(geometry.dilation), pads=list(geometry.pads),
                    output_padding=list(geometry.output_padding), group=int(geometry.groups),
                )
            else:
                self._add_constant(w_name, weight)
                node = make_conv(name, x, w_name, b_name, output, geometry.kernel, geometry.stride, geometry.dilation,
                                 geometry.pads, geometry.groups)
        self._doomed.update(i for i in nodes if i != root_index)
        for i in nodes:
            self._released.update(t for t in self.index.nodes[i].input if t)
        root.CopyFrom(node)
        return name, "MatMul+Add" if root_index in self._before else node.op_type

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
        removed_outputs: set[str] = set()
        for i in self._doomed:
            removed_outputs.update(index.nodes[i].output)

        # Constant nodes, and Identity or Transpose of constants, that fed only removed nodes go too (chains included).
        while True:
            used = self._names_read_by_kept_nodes()
            dead = {
                index.producer[t]
                for t in candidates
                if t in index.producer
                and t not in used
                and index.producer[t] not in self._doomed
                and graph.node[index.producer[t]].op_type in ("Constant", "Identity", "Transpose")
                and index.constant(t) is not None
            }
            if not dead:
                break
            self._doomed |= dead
            for i in dead:
                candidates.update(t for t in graph.node[i].input if t)
                removed_outputs.update(graph.node[i].output)

        for i in sorted(self._doomed, reverse=True):
            del graph.node[i]
        initializer_names = {t.name for t in graph.initializer}
        inputs = index.graph_inputs - initializer_names if self.initializers_are_inputs else index.graph_inputs
        protected = used | inputs | index.graph_outputs | set(index.read_elsewhere)
        stale = [k for k, t in enumerate(graph.initializer) if t.name in candidates and t.name not in protected]
        for k in reversed(stale):
            removed_outputs.add(graph.initializer[k].name)
            del graph.initializer[k]
        if self.initializers_are_inputs:
            _drop_named(graph.input, removed_outputs)
        if self._before or self._function_constants:
            # Function bodies: the new weights become Constant nodes in front; a MatMul goes before its Add.
            nodes = [helper.make_node("Constant", [], [t.name], name=t.name, value=t) for t in self._function_constants]
            kept = [i for i in range(len(index.nodes)) if i not in self._doomed]
            for position, node in zip(kept, graph.node):
                nodes += self._before.get(position, [])
                nodes.append(node)
            del graph.node[:]
            graph.node.extend(nodes)
        _drop_named(graph.value_info, removed_outputs)
        return {t for t in candidates if t not in defined}

    def _names_read_by_kept_nodes(self) -> set[str]:
        used = set(self.index.graph_outputs)
        for i, node in enumerate(self.graph.node):
            if i not in self._doomed:
                used |= node_reads(node)
        return used


def _drop_named(entries, names: set[str]) -> None:
    """Delete the entries (ValueInfoProto) of a repeated field whose name is in ``names``."""
    for k in reversed([k for k, v in enumerate(entries) if v.name in names]):
        del entries[k]
