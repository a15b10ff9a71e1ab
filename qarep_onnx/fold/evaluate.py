"""Turn a region's form into the numbers of its single operator, exactly, in float64.

Walks the form tree bottom-up (iteratively: deep chains must not hit Python's recursion limit);
each operator's description computes its own numbers from its operands' (``evaluate``) with the
identities of :mod:`.algebra`, reading each constant once, and the result is cast to the model's
element type once, at the end.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import Code, Reason, Refused
from ..graph.tensors import FLOAT_TYPES
from . import algebra
from .algebra import FormValues
from .forms import Form
from .kinds.base import LeafOp


class ScratchPool:
    """float64 buffers handed from one region's evaluation to the next.

    Every region of a network needs buffers of the same few shapes; reusing them spares the
    kernel from faulting in fresh pages for each block, a large part of the fold's time.
    """

    def __init__(self) -> None:
        self._free: dict[tuple[int, ...], list[np.ndarray]] = defaultdict(list)
        self._taken: list[np.ndarray] = []

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        free = self._free[shape]
        buffer = free.pop() if free else np.empty(shape)
        self._taken.append(buffer)
        return buffer

    def release(self) -> None:
        """Everything taken is free again: call it once the region's numbers have been copied out."""
        for buffer in self._taken:
            self._free[buffer.shape].append(buffer)
        self._taken.clear()


@dataclass(frozen=True)
class EvaluationContext:
    """What an operator's evaluation may need beyond its operands."""

    identity_channels: int  # channels of the identity term when its form does not know them
    pool: ScratchPool | None = None


def evaluate(root: Form, pool: ScratchPool | None = None) -> FormValues:
    """Weight and bias (float64) of the one operator that computes the form ``root`` from its source.

    With a ``pool`` the result may live in the pool's buffers: copy it out before releasing them.
    """
    context = EvaluationContext(root.geometry.in_channels or root.geometry.out_channels or 1, pool)
    values: dict[int, FormValues] = {}
    stack = [(root, False)]
    while stack:
        form, expanded = stack.pop()
        if id(form) in values:
            continue
        if not expanded:
            stack.append((form, True))
            stack.extend((o, False) for o in form.operands if id(o) not in values)
            continue
        operands = [values[id(o)] for o in form.operands]
        if form.op is None:  # the identity of the source
            values[id(form)] = algebra.identity_values(form.geometry.out_channels or context.identity_channels)
        else:
            values[id(form)] = form.op.evaluate(form, operands, context)
    result = values[id(root)]
    # One reduction instead of an elementwise mask: a sum of finite weights is finite.
    if not (np.isfinite(result.weight.sum()) and np.all(np.isfinite(result.bias))):
        raise Refused(Reason(Code.NON_FINITE, "the folded weights are not finite (inf or NaN in the block's constants)"))
    kind = result.geometry.kind
    return kind.finish(result) if kind is not None else result


def folded_values(root: Form, pool: ScratchPool | None = None) -> FormValues:
    """The numbers of the region's single operator in the model's element type (never pooled)."""
    # Overflow and NaN are checked for explicitly; numpy must not warn on the user's terminal.
    with np.errstate(all="ignore"):
        try:
            values = evaluate(root, pool)
            elem_type = model_dtype(root)
            weight = values.weight.astype(FLOAT_TYPES[elem_type])
            bias = values.bias.astype(FLOAT_TYPES[elem_type])
            if not (np.isfinite(weight.sum(dtype=np.float64)) and np.all(np.isfinite(bias))):
                name = onnx.TensorProto.DataType.Name(elem_type)
                raise Refused(Reason(Code.NON_FINITE, f"the folded weights overflow {name}; the block is kept as it is"))
            return FormValues(weight, bias, values.geometry)
        finally:
            if pool is not None:
                pool.release()


def model_dtype(root: Form) -> int:
    """ONNX element type of the region: that of its leaves' weights."""
    stack = [root]
    while stack:
        form = stack.pop()
        if isinstance(form.op, LeafOp):
            return form.op.weight.elem_type
        stack.extend(form.operands)
    return onnx.TensorProto.FLOAT
