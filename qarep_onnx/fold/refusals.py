"""Say why a block was not folded, in words a user can act on, and only where a fold was possible.

The region finder calls these as it grows forms: when a node refuses to extend a block after a
leaf (a BatchNorm in training mode, a weight that is a graph input), when a leaf cannot start a
region although a linear operator reads it, when a sum's branches cannot be merged, and when a
sum adds terms of different sources because something between them broke the chain (a tensor
read elsewhere, a Cast, a Pad no Conv can take over).  A Relu, or a product of two tensors deeper
in a branch, is where a block ends: nothing is reported for it.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from ..errors import Code, Reason
from ..graph.attributes import node_label
from ..graph.index import GraphIndex
from .forms import Form, region_nodes
from .linear_ops import ZeroPad

# How far back from a sum's operand to look for the block input when explaining a refusal.
_EXPLAIN_DEPTH = 8
# Reasons a node right after a block gives for not extending it that are worth reporting; a
# Relu or a gating Mul after a block is simply where the block ends.
_REPORTED_STOPS = {Code.BN_TRAINING, Code.NON_CONSTANT, Code.NOT_PER_CHANNEL, Code.DTYPE}


class Refusals:
    """The refusals of one graph, each recorded once (per code and node)."""

    def __init__(self, index: GraphIndex, graph_name: str, forms: dict[str, Form],
                 describe: Callable[[int], object], pad_blockers: dict[int, str]) -> None:
        self.index = index
        self.graph_name = graph_name
        self.forms = forms  # the finder's forms, as they grow
        self.describe = describe  # node index -> its description or Reason
        self.pad_blockers = pad_blockers  # Pad nodes a Conv could not take over, and why
        self.reasons: list[Reason] = []
        self._seen: set[tuple[Code, int]] = set()

    def _first_time(self, code: Code, i: int) -> bool:
        if (code, i) in self._seen:
            return False
        self._seen.add((code, i))
        return True

    def refuse(self, i: int, code: Code, message: str, blocker: int | None = None) -> None:
        """Node ``i`` does not fold; ``message`` follows its name, ``blocker`` is the node to blame."""
        node = self.index.nodes[i]
        if not self._first_time(code, blocker if blocker is not None else i):
            return
        names = [node_label(node)]
        if blocker is not None and blocker != i:
            names.append(node_label(self.index.nodes[blocker]))
        self.reasons.append(Reason(code, f"{node.op_type} '{node_label(node)}' {message}", tuple(names), self.graph_name))

    def stop(self, i: int, reason: Reason, operand: Form | None = None) -> None:
        """Node ``i`` could have extended a block and does not; reported when a block is at stake."""
        node = self.index.nodes[i]
        if reason.code not in _REPORTED_STOPS:
            return
        if operand is None:
            data = [t for t in node.input[:1] if t in self.forms and self.index.is_single_use(t, i)]
            if not data:
                return
            operand = self.forms[data[0]]
        if not operand.has_leaf or not self._first_time(reason.code, i):
            return
        message = reason.message
        if f"'{node_label(node)}'" not in message:
            message = f"{node.op_type} '{node_label(node)}' has {message}"
        if len(region_nodes(operand)) >= 2:
            message += "; the block before it is folded without it"
        else:
            message += "; it stays a node of its own"
        self.reasons.append(Reason(reason.code, message, (node_label(node),), self.graph_name))

    def unfoldable_leaf(self, i: int, reason: Reason) -> None:
        """A leaf that cannot start a region although a linear op reads it (a Conv -> BN left as two nodes)."""
        if not reason.code.is_refusal:
            return
        node = self.index.nodes[i]
        readers = self.index.consumer_nodes(node.output[0])
        if not any(not isinstance(self.describe(r), Reason) for r in readers) or not self._first_time(reason.code, i):
            return
        message = f"{reason.message}; it is not folded with the linear operators that follow it"
        self.reasons.append(Reason(reason.code, message, (node_label(node),), self.graph_name))

    def mixed_sources(self, i: int, operands: tuple[Form, ...]) -> None:
        """A sum of forms over different tensors: say why, when one of them derives from another."""
        sources = {o.source for o in operands}
        if not any(o.has_leaf for o in operands):
            return
        for operand in operands:
            found = self._blocker(operand.source, i, sources - {operand.source}, operand.has_leaf)
            if found is not None:
                code, message, blocker = found
                self.refuse(i, code, f"cannot merge its branches: {message}", blocker)

    def _blocker(self, start: str, consumer: int, targets: set[str], start_has_leaf: bool) -> tuple[Code, str, int] | None:
        """Walk up from ``start`` to a tensor computed from one of ``targets``; name what broke the chain.

        A non-linear operator (a Relu, or a product of two tensors such as GELU's) is reported only
        when its own output is summed as a term (``Relu(x)`` as the identity term, a branch scaled
        by a graph input): where a Conv reads it, as in a ResNet residual or a transformer's MLP,
        the branch is a deeper non-linear network and the block simply ends there.  The walk never
        goes past one: what lies behind it is not inside any block.
        """
        index = self.index
        queue = deque([(start, consumer, 0)])
        seen = {start}
        while queue:
            tensor, reader, depth = queue.popleft()
            form = self.forms.get(tensor)
            if form is not None and form.source in targets and form.has_leaf:
                if tensor in index.graph_outputs:
                    return Code.GRAPH_OUTPUT, f"'{tensor}' inside the block is a graph output", form.node
                if not index.is_single_use(tensor, reader):
                    readers = ", ".join(node_label(index.nodes[r]) for r in index.consumer_nodes(tensor) if r != reader)
                    return Code.FAN_OUT, f"'{tensor}' inside the block is also read by {readers}", form.node
            producer = index.producer.get(tensor)
            if producer is None or depth >= _EXPLAIN_DEPTH:
                continue
            inputs = [t for t in index.nodes[producer].input if t and index.constant(t) is None]
            connected = any(t in targets or (t in self.forms and self.forms[t].source in targets) for t in inputs)
            reason = self._breaking(producer)
            nonlinear = isinstance(reason, Reason) and reason.code in (Code.ENDS_BLOCK, Code.NOT_LINEAR)
            if isinstance(reason, Reason) and connected and not (nonlinear and (depth > 0 or start_has_leaf)):
                code = Code.BLOCKING_OP if reason.code == Code.ENDS_BLOCK else reason.code
                return code, reason.message, producer
            if nonlinear:
                continue  # a non-linear branch: nothing behind it is inside a block, nothing to report
            for t in inputs:
                if t not in seen:
                    seen.add(t)
                    queue.append((t, producer, depth + 1))
        return None

    def _breaking(self, producer: int) -> object:
        """What node ``producer`` is, with a Pad that no Conv took over counted as blocking."""
        node = self.index.nodes[producer]
        if producer in self.pad_blockers:
            return Reason(Code.BLOCKING_OP, self.pad_blockers[producer])
        described = self.describe(producer)
        if isinstance(described, ZeroPad):
            return Reason(Code.BLOCKING_OP, f"Pad '{node_label(node)}' pads a tensor no Conv reads directly")
        return described
