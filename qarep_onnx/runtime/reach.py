"""Did the validation inputs reach the folds?  A verdict must have measured something.

A fold in the main graph (or in a function it calls) runs on every input: its numbers reach the
outputs compared, or cannot change them.  A fold inside an If branch or a Loop or Scan body runs
only when the inputs take that branch or loop at least once.  So the candidate session of a
validation is profiled when such folds exist, and onnxruntime's profile says which nodes ran: a
folded node that never ran was not validated.  Asking onnxruntime which nodes ran, rather than
perturbing them and watching the outputs, also holds where the outputs cannot show a change (a
LayerNormalization or an ArgMax after the fold).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Sequence

_KERNEL = "_kernel_time"
_INLINED = "_inlfunc_"  # onnxruntime's prefix for the nodes of an inlined model-local function


def needs_profile(folds: Sequence) -> bool:
    """Whether any fold sits where inputs may not reach it (a body or a function, not the main graph)."""
    return any(f.graph for f in folds)


def executed_nodes(profile_path: str) -> set[str]:
    """The names of the nodes onnxruntime's profile says ran."""
    with open(profile_path) as f:
        events = json.load(f)
    return {e["name"][: -len(_KERNEL)] for e in events
            if isinstance(e, dict) and e.get("cat") == "Node" and str(e.get("name", "")).endswith(_KERNEL)}


def _ran(node: str, executed: set[str]) -> bool:
    return node in executed or any(name.startswith(_INLINED) and name.endswith("_" + node) for name in executed)


def unreached_folds(folds: Sequence, executed: set[str], provider: str) -> list[str]:
    """For each graph other than the main one, a sentence when none of its folded nodes ran."""
    by_graph: dict[str, list[str]] = defaultdict(list)
    for fold in folds:
        if fold.graph:
            by_graph[fold.graph].append(fold.node)
    messages = []
    for graph, nodes in by_graph.items():
        if not executed:
            messages.append(f"whether the inputs reached the {len(nodes)} folded node(s) in {graph} cannot be told: "
                            f"the {provider} provider ran the model without reporting its nodes")
        elif not any(_ran(node, executed) for node in nodes):
            messages.append(f"{len(nodes)} folded node(s) in {graph} never ran on these inputs: the inputs never reached them")
    return messages
