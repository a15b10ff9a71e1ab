"""Turn a region's form into the numbers of its single operator, exactly, in float64.

Walks the form tree bottom-up (iteratively: deep chains must not hit Python's recursion limit);
each operator's description computes its own numbers from its operands' (``evaluate``) with the
identities of :mod:`.algebra`, reading each constant once, and the result is cast to the model's
element type once, at the end.

That cast is where a fold can lose what the block did not: a small BatchNorm scale can push a
float16 model's folded weights below float16's normal range (6.1e-5), where few bits remain, while
the original multiplied normal weights and rounded once.  Such a fold is refused (``PRECISION``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import Code, Reason, Refused
from ..graph.tensors import FLOAT_TYPES
from ..numbers import narrow_range
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


def evaluate(root: Form, pool: ScratchPool | None = None, leaves: list[np.ndarray] | None = None) -> FormValues:
    """Weight and bias (float64) of the one operator that computes the form ``root`` from its source.

    With a ``pool`` the result may live in the pool's buffers: copy it out before releasing them.
    ``leaves``, when given, receives the stored weights of the region's leaf operators.
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
            if leaves is not None and isinstance(form.op, LeafOp):
                leaves.append(values[id(form)].weight)
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
            elem_type = model_dtype(root)
            dtype = np.dtype(FLOAT_TYPES[elem_type])
            leaves: list[np.ndarray] | None = [] if narrow_range(dtype) else None
            values = evaluate(root, pool, leaves)
            weight = values.weight.astype(dtype)
            bias = values.bias.astype(dtype)
            name = onnx.TensorProto.DataType.Name(elem_type)
            if not (np.isfinite(weight.sum(dtype=np.float64)) and np.all(np.isfinite(bias))):
                raise Refused(Reason(Code.NON_FINITE, f"the folded weights overflow {name}; the block is kept as it is"))
            if leaves is not None:
                _check_precision(values.weight, weight, leaves, dtype.name)
            return FormValues(weight, bias, values.geometry)
        finally:
            if pool is not None:
                pool.release()


# Normal numbers keep a channel within half an epsilon; the original's weights set the bar when coarser.
_COARSER_THAN = 4.0


def _check_precision(exact: np.ndarray, stored: np.ndarray, leaves: list[np.ndarray], type_name: str) -> None:
    """Refuse a fold whose weights, stored in a narrow type, keep a channel more coarsely than the
    original's weights keep theirs (and than normal numbers would)."""
    unit = float(np.finfo(stored.dtype).eps) / 2
    original = max([unit] + [float(algebra.channel_coarseness(w, w).max(initial=0.0)) for w in leaves])
    coarseness = algebra.channel_coarseness(exact, stored)
    worst = int(np.argmax(coarseness))
    if coarseness[worst] > _COARSER_THAN * original:
        bits, kept = int(-np.log2(coarseness[worst])), int(-np.log2(original))
        raise Refused(Reason(Code.PRECISION, (
            f"the folded weights of output channel {worst} fall below {type_name}'s normal range and keep about "
            f"{bits} significant bits where the block's own weights keep {kept}; the block is kept as it is "
            f"(fold the float32 model, then convert it)")))


def model_dtype(root: Form) -> int:
    """ONNX element type of the region: that of its leaves' weights."""
    stack = [root]
    while stack:
        form = stack.pop()
        if isinstance(form.op, LeafOp):
            return form.op.weight.elem_type
        stack.extend(form.operands)
    return onnx.TensorProto.FLOAT
