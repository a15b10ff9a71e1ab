"""What a run of the folder did, as plain data: folds, refusals, op counts.

Nothing here prints; the CLI renders a :class:`Report`, and ``Report.to_dict()`` is the
JSON-ready form for pipelines.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import onnx

from ..errors import Reason
from ..graph.walk import all_nodes, scopes

REPORT_SCHEMA_VERSION = 3


@dataclass(frozen=True)
class Fold:
    """One region replaced by a single operator (a Conv, ConvTranspose, Gemm, or a MatMul with its Add)."""

    output: str  # the tensor the new operator computes (the region root, name unchanged)
    input: str  # the tensor every branch read
    nodes: tuple[str, ...]  # the nodes that now compute ``output``, in order (the last computes it)
    op_types: tuple[str, ...]  # their op types: ("Conv",), ("Gemm",), ("MatMul", "Add"), ...
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[int, ...]
    groups: int
    branches: int  # leaves merged: convs, pools and identity terms
    removed_nodes: tuple[str, ...]
    removed_op_types: tuple[str, ...]
    graph: str = ""

    @property
    def node(self) -> str:
        """The name of the node that computes ``output``."""
        return self.nodes[-1]

    @property
    def is_block(self) -> bool:
        """Two or more branches merged (a plain Conv->BN chain is a fold but not a block)."""
        return self.branches >= 2


@dataclass
class Report:
    folds: list[Fold] = field(default_factory=list)
    refusals: list[Reason] = field(default_factory=list)  # blocks left as they were, and why
    op_counts_before: dict[str, int] = field(default_factory=dict)
    op_counts_after: dict[str, int] = field(default_factory=dict)
    # Attached by the caller of the fold: a ModelStats before and after, a ValidationResult.
    stats_before: object | None = None
    stats_after: object | None = None
    validation: object | None = None
    input_external_data: bool = False  # the input's weights were in external data files
    qdq_pairs: int = 0  # QuantizeLinear -> DequantizeLinear pairs in the input (a QAT export)
    dequantized_constants: int = 0  # DequantizeLinear of a constant (quantized weights), never folded ahead of time

    @property
    def blocks_folded(self) -> int:
        return sum(1 for f in self.folds if f.is_block)

    @property
    def regions_folded(self) -> int:
        return len(self.folds)

    def to_dict(self) -> dict:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "blocks_folded": self.blocks_folded,
            "regions_folded": self.regions_folded,
            "folds": [asdict(f) for f in self.folds],
            "refusals": [asdict(r) for r in self.refusals],
            "op_counts_before": dict(self.op_counts_before),
            "op_counts_after": dict(self.op_counts_after),
            "parameters": _before_after(self.stats_before, self.stats_after, "parameters"),
            "flops": _before_after(self.stats_before, self.stats_after, "flops"),
            "validation": self.validation.to_dict() if self.validation is not None else None,
            "qdq": {"pairs": self.qdq_pairs, "dequantized_constants": self.dequantized_constants},
        }


def _before_after(before, after, field_name: str) -> dict | None:
    if before is None or after is None:
        return None
    return {"before": getattr(before, field_name), "after": getattr(after, field_name)}


def qdq_counts(model: onnx.ModelProto) -> tuple[int, int]:
    """(Q -> DQ pairs, DequantizeLinear nodes of a constant) over every graph and function."""
    pairs = constants = 0
    for scope in scopes(model):
        producer = {o: n.op_type for n in scope.nodes for o in n.output}
        initializers = {t.name for t in scope.initializers}
        for node in scope.nodes:
            if node.op_type != "DequantizeLinear" or not node.input:
                continue
            source = node.input[0]
            if producer.get(source) == "QuantizeLinear":
                pairs += 1
            elif source in initializers or producer.get(source) in ("Constant", "Identity"):
                constants += 1
    return pairs, constants


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type over the main graph, its subgraphs and model-local functions."""
    return dict(sorted(Counter(node.op_type for node in all_nodes(model)).items()))
