"""Did the validation inputs reach the folds?  A check that a verdict measured something.

Each graph's folded nodes are perturbed in a probe copy; if no output moves beyond its tolerance,
the inputs never reached them (a Loop whose trip count came out as zero, an If branch not taken).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph.walk import NameAllocator, scopes
from .compare import as_array, max_error
from .noise import model_float_type
from .sessions import run_session, session


def unreached_folds(candidate, folds, choice, input_sets, computed, tolerances) -> list[str]:
    """Perturb each graph's folded nodes in a probe copy; a group no output notices was never exercised."""
    by_graph: dict[str, list[str]] = defaultdict(list)
    for fold in folds:
        by_graph[fold.graph].append(fold.node)
    messages = []
    float_type = model_float_type(candidate)
    for graph, node_names in by_graph.items():
        probe = probed_copy(candidate, set(node_names), float_type)
        s = session(probe, choice, optimize_graph=False)
        names = [o.name for o in s.get_outputs() if o.name in tolerances]
        reached = False
        for input_set, expected in zip(input_sets, computed):
            moved = dict(zip(names, run_session(s, names, input_set.feeds)))
            for name in names:
                a, b = as_array(expected[name]), as_array(moved[name])
                if a is None or b is None or a.shape != b.shape:
                    reached = True  # a different structure is a visible change
                elif a.size and max_error(a, b)[0] > tolerances[name]:
                    reached = True
            if reached:
                break
        if not reached:
            where = f" in {graph}" if graph else ""
            messages.append(f"{len(node_names)} folded node(s){where} changed no output when perturbed: "
                            "the inputs never reached them")
    return messages


def probed_copy(model: onnx.ModelProto, node_names: set[str], float_type: int) -> onnx.ModelProto:
    """A copy where the output ``y`` of each named node becomes ``1.5 * y + 1``: a change any use of it shows."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(float_type)
    names = NameAllocator.for_model(copy)
    for scope in scopes(copy):
        rebuilt = []
        for node in scope.nodes:
            rebuilt.append(node)
            if node.name in node_names and node.output:
                final = node.output[0]
                raw = node.output[0] = names.fresh(f"{final}__probe")
                scale, offset, scaled = names.fresh("probe_scale"), names.fresh("probe_offset"), names.fresh(f"{final}__probed")
                rebuilt += [
                    helper.make_node("Constant", [], [scale], value=numpy_helper.from_array(np.array(1.5, dtype))),
                    helper.make_node("Constant", [], [offset], value=numpy_helper.from_array(np.array(1.0, dtype))),
                    helper.make_node("Mul", [raw, scale], [scaled]),
                    helper.make_node("Add", [scaled, offset], [final]),
                ]
        if len(rebuilt) != len(scope.nodes):
            del scope.nodes[:]
            scope.nodes.extend(rebuilt)
    return copy
