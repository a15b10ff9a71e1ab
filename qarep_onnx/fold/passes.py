"""The fold pass: find linear regions in every graph of a model and replace each with one Conv.

Works in place on a ModelProto: the main graph, the bodies of If/Loop/Scan nodes (which see the
enclosing graphs' constants, unless a name of their own shadows them) and model-local functions
(whose new weights become Constant nodes).  A graph is cleaned up after its subgraphs, so that a
weight of the main graph read only by a block folded inside a Loop body goes too.
Returns a :class:`~qarep_onnx.report.Report`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace

import onnx

from ..errors import Reason, Refused
from ..graph.attributes import node_label
from ..graph.index import GraphIndex
from ..graph.walk import NameAllocator, node_reads, subgraph_outer_names
from .evaluate import ScratchPool, folded_values
from .forms import Region
from .ops import TAKEN_OVER
from .regions import RegionFinder
from .report import Fold, Report, op_counts, qdq_counts
from .rewrite import GraphRewriter

log = logging.getLogger("qarep_onnx")

# IR version 3 lists every initializer among the graph inputs: there, that listing says nothing
# about the caller overriding it (onnxruntime treats them as constants too).
_FIRST_IR_WITH_OPTIONAL_INITIALIZER_INPUTS = 4


@dataclass
class _Pass:
    """What every graph of one model's fold shares."""

    keep_post_bn: bool
    names: NameAllocator
    report: Report
    legacy_ir: bool  # IR version 3: initializers are graph inputs


# A fold can make a tensor single-use that was not before (a scale in front of a block that also
# fed the block's identity term is read by the merged Conv alone): the pass repeats until nothing
# more folds, so that a second run of the tool changes nothing.  Two passes are the rule.
_MAX_PASSES = 8


def fold_model(
    model: onnx.ModelProto, keep_post_bn: bool = False, known_shapes: dict[str, tuple[int | None, ...]] | None = None
) -> Report:
    """Fold every linear region of ``model`` in place; ``keep_post_bn`` keeps the BN after a block.

    ``known_shapes``: inferred shapes of main-graph tensors (ranks decide how a MatMul's output may fold).
    """
    report = Report(op_counts_before=op_counts(model))
    report.qdq_pairs, report.dequantized_constants = qdq_counts(model)
    legacy_ir = model.ir_version < _FIRST_IR_WITH_OPTIONAL_INITIALIZER_INPUTS
    state = _Pass(keep_post_bn, NameAllocator.for_model(model), report, legacy_ir)
    trained = _training_names(model)
    for _ in range(_MAX_PASSES):
        first = len(report.folds)
        index = GraphIndex(
            model.graph,
            label="the main graph",
            overridable_initializers=not legacy_ir,
            variable={n: "is used by the model's training_info (trained weights are not constants)" for n in trained},
            read_elsewhere=trained,
            known_shapes=known_shapes,
        )
        _fold_graph(index, state, graph_name="", constants_as_nodes=False, initializers_are_inputs=legacy_ir)
        for function in model.functions:
            _fold_function(function, state)
        if len(report.folds) == first:
            break
        again = _may_fold_more(model.graph, report.folds[first:])
        _merge_refolds(report, first)
        if not again:
            break
    report.refusals = _unique(report.refusals)
    report.op_counts_after = op_counts(model)
    return report


def _may_fold_more(graph: onnx.GraphProto, folds: list[Fold]) -> bool:
    """Whether another pass can find something: a fold left its input with one reader, and an operator
    that reader may now take over computes it.  Folds in subgraphs and functions are not worth the
    bookkeeping: another pass looks at them."""
    if any(f.graph for f in folds):
        return True
    readers = Counter(name for node in graph.node for name in node_reads(node))
    producer = {o: node.op_type for node in graph.node for o in node.output}
    outputs = {o.name for o in graph.output}
    return any(
        readers.get(f.input) == 1 and producer.get(f.input) in TAKEN_OVER and f.input not in outputs for f in folds
    )


def _merge_refolds(report: Report, first: int) -> None:
    """A fold of a later pass that took in the operator an earlier fold made replaces that earlier entry."""
    for new in report.folds[first:]:
        earlier = [k for k, f in enumerate(report.folds[:first])
                   if f.graph == new.graph and set(f.nodes) & set(new.removed_nodes)]
        if not earlier:
            continue
        k = earlier[0]
        old = report.folds[k]
        removed = [n for n in new.removed_nodes if n not in old.nodes]
        op_types = [t for n, t in zip(new.removed_nodes, new.removed_op_types) if n not in old.nodes]
        report.folds[k] = replace(
            new,
            removed_nodes=old.removed_nodes + tuple(removed),
            removed_op_types=old.removed_op_types + tuple(op_types),
            branches=old.branches + new.branches - 1,
        )
        report.folds.remove(new)


def _unique(refusals: list[Reason]) -> list[Reason]:
    """Each refusal once: a later pass sees the same refusal again, worded for the graph it left."""
    seen, unique = set(), []
    for refusal in refusals:
        key = (refusal.code, refusal.nodes, refusal.graph)
        if key not in seen:
            seen.add(key)
            unique.append(refusal)
    return unique


def _training_names(model: onnx.ModelProto) -> set[str]:
    """Main-graph tensors that the model's training_info binds or reads."""
    names: set[str] = set()
    for info in model.training_info:
        names.update(b.key for b in info.initialization_binding)
        names.update(b.key for b in info.update_binding)
        for graph in (info.initialization, info.algorithm):
            names |= subgraph_outer_names(graph)
    return names


def _fold_function(function: onnx.FunctionProto, state: _Pass) -> None:
    """Fold a function body through a graph view of it, then write the nodes back."""
    graph = onnx.helper.make_graph(
        list(function.node),
        function.name,
        [onnx.ValueInfoProto(name=n) for n in function.input],
        [onnx.ValueInfoProto(name=n) for n in function.output],
    )
    label = f"{function.domain}::{function.name}"
    before = len(state.report.folds)
    index = GraphIndex(graph, label=f"function {label}")
    _fold_graph(index, state, label, constants_as_nodes=True, initializers_are_inputs=False)
    if len(state.report.folds) > before:
        del function.node[:]
        function.node.extend(graph.node)
        alive = {o for n in graph.node for o in n.output} | set(function.input)
        for k in reversed([k for k, v in enumerate(function.value_info) if v.name not in alive]):
            del function.value_info[k]


def _fold_region(region: Region, index: GraphIndex, rewriter: GraphRewriter, pool: ScratchPool, report: Report,
                 graph_name: str) -> None:
    """Replace one region by its operator and report it, or report why its numbers forbid that."""
    form = region.form
    node_names = tuple(node_label(index.nodes[i]) for i in region.nodes)
    op_types = tuple(index.nodes[i].op_type for i in region.nodes)
    try:
        values = folded_values(form, pool)
    except Refused as refused:
        message = f"the block computing '{form.output}' is not folded: {refused.reason.message}"
        report.refusals.append(Reason(refused.reason.code, message, node_names, graph_name))
        return
    emitted = rewriter.replace(region, values)
    g = values.geometry
    report.folds.append(Fold(
        output=form.output,
        input=form.source,
        nodes=tuple(n.name for n in emitted),
        op_types=tuple(n.op_type for n in emitted),
        kernel=g.kernel,
        stride=g.stride,
        dilation=g.dilation,
        pads=g.pads,
        groups=int(g.groups),
        branches=form.branches,
        removed_nodes=node_names,
        removed_op_types=op_types,
        graph=graph_name,
    ))
    log.debug("folded %d nodes (%d branches) into %s", len(node_names), form.branches, emitted[-1].name)


def _fold_graph(
    index: GraphIndex, state: _Pass, graph_name: str, constants_as_nodes: bool, initializers_are_inputs: bool
) -> set[str]:
    """Fold one graph and, after it, its subgraphs; returns outer names it stopped reading."""
    graph, report = index.graph, state.report
    regions, refusals = RegionFinder(index, state.keep_post_bn, graph_name).find()
    report.refusals.extend(refusals)
    rewriter = GraphRewriter(graph, index, state.names, constants_as_nodes, initializers_are_inputs)
    pool = ScratchPool()
    for region in regions:
        _fold_region(region, index, rewriter, pool, report, graph_name)

    released_by_subgraphs: set[str] = set()
    for i, node in enumerate(graph.node):
        if i in rewriter.doomed:
            continue
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                sub_name = f"{graph_name + '/' if graph_name else ''}{node.name or node.op_type}.{attr.name}"
                sub_index = GraphIndex(sub, index.constants, label=f"subgraph {sub_name}")
                # IR 3 subgraphs list their initializers as inputs too, and a body's inputs are fixed
                # by its node: new weights go in as Constant nodes there.
                released_by_subgraphs |= _fold_graph(
                    sub_index, state, sub_name, constants_as_nodes or initializers_are_inputs, False
                )
    return rewriter.commit(released_by_subgraphs)

