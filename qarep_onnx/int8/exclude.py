"""Which layers ``--exclude`` names: node names, op types and regular expressions.

Each pattern is tried in this order: the exact name of a layer; a layer op type (``Gemm``,
``MatMul``, ``Conv``, ``ConvTranspose``: every layer of that type); a regular expression that must
match a whole layer name (``/head/.*``).  A pattern that names nothing is a one-line error with the
closest names, and so is one that names a node that is not a layer.
"""

from __future__ import annotations

import re
from typing import Sequence

import onnx

from ..errors import UsageError
from .layers import LAYER_OPS, Layer


def _hint(pattern: str, names: list[str]) -> str:
    close = [n for n in names if pattern.lower() in n.lower() or n.lower() in pattern.lower()][:3]
    return f"; did you mean {', '.join(close)}?" if close else "; the int8 report (qarep-onnx int8) lists the layers"


def resolve(patterns: Sequence[str], layers: list[Layer], model: onnx.ModelProto, folded: bool) -> list[str]:
    """The layer names ``patterns`` select, in graph order, or :class:`UsageError`."""
    names = [l.name for l in layers]
    nodes = {n.name: n.op_type for n in model.graph.node}
    where = "the folded model" if folded else "the model"
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern in names:
            chosen.add(pattern)
            continue
        if pattern in LAYER_OPS:
            matched = [l.name for l in layers if l.op_type == pattern]
            if not matched:
                raise UsageError(f"{where} has no {pattern} layer to keep in float", option="exclude", value=pattern)
            chosen.update(matched)
            continue
        if pattern in nodes:
            raise UsageError(f"a {nodes[pattern]} node is not a quantized layer (Conv, ConvTranspose, Gemm or MatMul "
                             "with a constant weight)", option="exclude", value=pattern)
        try:
            expression = re.compile(pattern)
        except re.error as exc:
            raise UsageError(f"not a layer name, a layer op type or a valid regular expression ({exc})",
                             option="exclude", value=pattern) from exc
        matched = [n for n in names if expression.fullmatch(n)]
        if not matched:
            raise UsageError(f"no layer of {where} has that name or matches it as a regular expression"
                             f"{_hint(pattern, names)}", option="exclude", value=pattern)
        chosen.update(matched)
    return [n for n in names if n in chosen]
