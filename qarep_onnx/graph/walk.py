"""One walk over every graph of a model, one allocator of fresh names, one sweep of unread nodes.

A model's nodes live in its main graph, in the bodies of If/Loop/Scan nodes (recursively) and in
model-local functions.  Whatever visits them all (the fold, counting, validation's copies, INT8)
goes through :func:`scopes`, so none of them forgets the bodies of a function or of a Loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import onnx

_A = onnx.AttributeProto


def node_subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs a node carries as attributes (If branches, Loop and Scan bodies)."""
    graphs = []
    for attr in node.attribute:
        if attr.type == _A.GRAPH:
            graphs.append(attr.g)
        elif attr.type == _A.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


@dataclass(frozen=True)
class Scope:
    """The nodes of one graph or function body, with what they live in.

    ``graph`` is the GraphProto (None for a function body, whose ``nodes`` are the function's);
    ``in_body`` is true inside an If/Loop/Scan body, at any depth, in a function or not.
    """

    nodes: object  # the repeated NodeProto field, editable in place
    graph: onnx.GraphProto | None
    function: onnx.FunctionProto | None
    in_body: bool

    @property
    def initializers(self) -> list[onnx.TensorProto]:
        return list(self.graph.initializer) if self.graph is not None else []

    @property
    def value_infos(self) -> list[onnx.ValueInfoProto]:
        g = self.graph
        return [] if g is None else list(g.input) + list(g.output) + list(g.value_info)


def scopes(model: onnx.ModelProto) -> Iterator[Scope]:
    """Every graph of ``model``: the main graph, then each function body, each followed by the bodies
    nested in it.  A scope's nested bodies are looked up after the caller is done with the scope, so
    a caller may rewrite a scope's node list while walking."""
    roots = [Scope(model.graph.node, model.graph, None, False)]
    roots += [Scope(f.node, None, f, False) for f in model.functions]
    for root in roots:
        stack = [root]
        while stack:
            scope = stack.pop()
            yield scope
            for node in reversed(scope.nodes):
                stack.extend(Scope(g.node, g, scope.function, True) for g in reversed(node_subgraphs(node)))


def all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """Every node of every graph and function body."""
    for scope in scopes(model):
        yield from scope.nodes


def model_tensors(model: onnx.ModelProto, initializers_only: bool = False) -> Iterator[onnx.TensorProto]:
    """The initializers of every graph and, unless told, the tensor of every Constant node (functions included)."""
    for scope in scopes(model):
        yield from scope.initializers
        if not initializers_only:
            for node in scope.nodes:
                yield from (a.t for a in node.attribute if a.type == _A.TENSOR)


def subgraph_outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph (recursively) reads but does not define: its uses of the outer scope."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n and n not in defined)
        for sub in node_subgraphs(node):
            used |= subgraph_outer_names(sub) - defined
        defined.update(node.output)
    return used


def graph_defined_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a graph defines itself: formal inputs, initializers and node outputs."""
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    names |= {t.values.name for t in graph.sparse_initializer}
    for node in graph.node:
        names.update(o for o in node.output if o)
    return names


def node_reads(node: onnx.NodeProto) -> set[str]:
    """What a node reads: its inputs and what its subgraphs read from the enclosing scope."""
    reads = {n for n in node.input if n}
    for sub in node_subgraphs(node):
        reads |= subgraph_outer_names(sub)
    return reads


def input_slots(nodes) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Each tensor read by ``nodes`` (inputs only, not bodies), with every (node, input slot) reading it."""
    slots: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in nodes:
        for slot, name in enumerate(node.input):
            if name:
                slots.setdefault(name, []).append((node, slot))
    return slots


def all_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor and node name in a model: its graphs, subgraphs and functions."""
    names: set[str] = set()
    for function in model.functions:
        names.update(function.input)
        names.update(function.output)
    for scope in scopes(model):
        names.update(v.name for v in scope.value_infos)
        names.update(t.name for t in scope.initializers)
        for node in scope.nodes:
            names.update(node.output)
            names.add(node.name)
    names.discard("")
    return names


class NameAllocator:
    """Fresh tensor and node names that collide with nothing in the model, nor with one another."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    @classmethod
    def for_model(cls, model: onnx.ModelProto) -> NameAllocator:
        return cls(all_names(model))

    def fresh(self, base: str) -> str:
        """``base`` itself when it is free, else ``base_2``, ``base_3``, ..."""
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name


def remove_unread(
    nodes, removable: Callable[[onnx.NodeProto], bool], kept_reads: set[str], candidates: set[str] | None = None
) -> set[str]:
    """Delete, until none is left, the ``removable`` nodes whose outputs nothing reads; returns their outputs.

    ``kept_reads`` are names read from outside ``nodes`` (graph outputs, enclosing scopes).  With
    ``candidates``, only nodes whose outputs are all among them go, and a removed node's inputs join
    them: a chain of constants that fed only removed nodes goes, a dead node the model already had
    stays.
    """
    removed: set[str] = set()
    while True:
        read = set(kept_reads)
        for node in nodes:
            read |= node_reads(node)
        dead = [
            k for k, node in enumerate(nodes)
            if removable(node) and not any(o in read for o in node.output)
            and (candidates is None or all(o in candidates for o in node.output if o))
        ]
        if not dead:
            return removed
        for k in reversed(dead):
            node = nodes[k]
            removed.update(o for o in node.output if o)
            if candidates is not None:
                candidates.update(t for t in node.input if t)
            del nodes[k]


def drop_unread_initializers(graph: onnx.GraphProto) -> None:
    """Delete the graph's initializers that no node (nor body) reads and that are not a graph output or
    the default of a graph input."""
    kept_names = {o.name for o in graph.output} | {i.name for i in graph.input}
    read = kept_names.union(*(node_reads(n) for n in graph.node))
    kept = [t for t in graph.initializer if t.name in read]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


def topologically_sorted(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` in an order where every tensor is computed before it is read, bodies' reads included;
    stable (the given order wherever it already is).  ``available``: what is there before any node runs
    (graph inputs, initializers, outer scopes).  A cycle is left in place for the checker to report."""
    known = set(available) | {""}
    produced = {o for n in nodes for o in n.output}
    done: list[onnx.NodeProto] = []
    pending = list(nodes)
    while pending:
        waiting = []
        for node in pending:
            if all(name in known or name not in produced for name in node_reads(node)):
                done.append(node)
                known.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            return done + waiting
        pending = waiting
    return done
