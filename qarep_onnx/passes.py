"""The fold pass: find linear regions in every graph of a model and replace each with one Conv.

Works in place on a ModelProto: the main graph, the bodies of If/Loop/Scan nodes (which see the
enclosing graphs' constants) and model-local functions (whose new weights become Constant nodes).
Returns a :class:`~qarep_onnx.report.Report`.
"""

from __future__ import annotations

import logging

import onnx

from .evaluate import FoldAborted, ScratchPool, folded_conv
from .graph import Constant, GraphIndex, node_label
from .region import RegionFinder
from .report import Fold, Refusal, Report, op_counts
from .rewrite import GraphRewriter, NameAllocator, all_names

log = logging.getLogger("qarep_onnx")


def fold_model(model: onnx.ModelProto, keep_post_bn: bool = False) -> Report:
    """Fold every linear region of ``model`` in place; ``keep_post_bn`` keeps the BN after a block."""
    report = Report(op_counts_before=op_counts(model))
    names = NameAllocator(all_names(model))
    _fold_graph(model.graph, {}, keep_post_bn, names, report, graph_name="")
    for function in model.functions:
        _fold_function(function, keep_post_bn, names, report)
    report.op_counts_after = op_counts(model)
    return report


def _fold_function(function: onnx.FunctionProto, keep_post_bn: bool, names: NameAllocator, report: Report) -> None:
    """Fold a function body through a graph view of it, then write the nodes back."""
    graph = onnx.helper.make_graph(
        list(function.node),
        function.name,
        [onnx.ValueInfoProto(name=n) for n in function.input],
        [onnx.ValueInfoProto(name=n) for n in function.output],
    )
    before = len(report.folds)
    _fold_graph(graph, {}, keep_post_bn, names, report, f"{function.domain}::{function.name}", constants_as_nodes=True)
    if len(report.folds) > before:
        del function.node[:]
        function.node.extend(graph.node)


def _fold_graph(
    graph: onnx.GraphProto,
    outer_constants: dict[str, Constant],
    keep_post_bn: bool,
    names: NameAllocator,
    report: Report,
    graph_name: str,
    constants_as_nodes: bool = False,
) -> None:
    index = GraphIndex(graph, outer_constants)
    regions, refusals = RegionFinder(index, keep_post_bn, graph_name).find()
    report.refusals.extend(refusals)
    rewriter = GraphRewriter(graph, index, names, constants_as_nodes)
    pool = ScratchPool()
    for region in regions:
        form = region.form
        node_names = tuple(node_label(index.nodes[i]) for i in region.nodes)
        op_types = tuple(index.nodes[i].op_type for i in region.nodes)
        try:
            conv = folded_conv(form, pool)
        except FoldAborted as aborted:
            message = f"the block computing '{form.output}' is not folded: {aborted.message}"
            report.refusals.append(Refusal(aborted.code, message, node_names, graph_name))
            continue
        g = conv.geometry
        conv_name = rewriter.replace(region.root_node, region.nodes, form.source, conv.weight, conv.bias, g)
        fold = Fold(
            output=form.output,
            input=form.source,
            conv_name=conv_name,
            kernel=g.kernel,
            stride=g.stride,
            dilation=g.dilation,
            pads=g.pads,
            groups=int(g.groups),
            branches=form.branches,
            removed_nodes=node_names,
            removed_op_types=op_types,
            graph=graph_name,
        )
        log.debug("folded %d nodes (%d branches) into %s", len(node_names), form.branches, conv_name)
        report.folds.append(fold)
    rewriter.commit()

    for node in graph.node:
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                sub_name = f"{graph_name + '/' if graph_name else ''}{node.name or node.op_type}.{attr.name}"
                _fold_graph(sub, index.constants, keep_post_bn, names, report, sub_name, constants_as_nodes)
