"""Which output of the candidate answers which output of the original.

Two exports of one network rarely agree on output names (PyTorch names them by counters: ``1658``
in an unfused export, ``1311`` in the fused one).  Outputs pair by name when every name of the
original is among the candidate's; otherwise by position when both have as many outputs, of the
same element types and ranks, in that order (said in a note); ``output_map`` pairs by hand what
neither rule does.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..errors import UsageError


@dataclass(frozen=True)
class OutputSpec:
    name: str
    elem_type: int | None  # None: not a tensor, or not declared
    rank: int | None  # None: unknown


def model_outputs(model: onnx.ModelProto) -> list[OutputSpec]:
    specs = []
    for value in model.graph.output:
        tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
        elem_type = tensor.elem_type if tensor is not None and tensor.elem_type else None
        rank = len(tensor.shape.dim) if tensor is not None and tensor.HasField("shape") else None
        specs.append(OutputSpec(value.name, elem_type, rank))
    return specs


def _alike(a: OutputSpec, b: OutputSpec) -> bool:
    return a.elem_type == b.elem_type and (a.rank is None or b.rank is None or a.rank == b.rank)


def pair_outputs(original: list[OutputSpec], candidate: list[OutputSpec], output_map: dict[str, str] | None,
                 label: str = "the candidate") -> tuple[dict[str, str], str | None]:
    """original output name -> candidate output name, and a note when the pairing is not by name."""
    given = dict(output_map or {})
    ours, theirs = [o.name for o in original], {o.name for o in candidate}
    for name, other in given.items():
        if name not in ours:
            raise UsageError(f"'{name}' is not an output of the original (its outputs: {', '.join(ours)})",
                             option="output_map", value=f"{name}={other}")
        if other not in theirs:
            raise UsageError(f"'{other}' is not an output of {label} (its outputs: {', '.join(sorted(theirs))})",
                             option="output_map", value=f"{name}={other}")
    if all(name in given or name in theirs for name in ours):
        return {name: given.get(name, name) for name in ours}, None
    if len(original) == len(candidate) and all(map(_alike, original, candidate)):
        pairs = {o.name: given.get(o.name, c.name) for o, c in zip(original, candidate)}
        shown = ", ".join(f"{a} -> {b}" for a, b in pairs.items() if a != b)
        return pairs, f"{label} names its outputs differently: paired by position ({shown})"
    missing = next(name for name in ours if name not in given and name not in theirs)
    raise UsageError(
        f"{label} has no output '{missing}' and its outputs ({', '.join(o.name for o in candidate)}) do not pair with "
        f"the original's ({', '.join(ours)}) by position (count, element type, rank); pair them by name",
        option="output_map", example=f"{missing}=NAME",
    )
