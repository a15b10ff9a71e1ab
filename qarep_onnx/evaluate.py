"""Turn a region's symbolic form into the numbers of its single Conv.

Walks the form tree bottom-up (iteratively: deep chains must not hit Python's recursion limit),
reading each constant once, applying the identities of :mod:`qarep_onnx.algebra` in float64, and
casting to the model's element type once, at the end.
"""

from __future__ import annotations

import numpy as np
import onnx

from . import algebra
from .algebra import ConvForm
from .graph import FLOAT_TYPES
from .ops import AffineStep, AveragePoolLeaf, ChannelAffine, ConvLeaf, Passthrough, Sum
from .region import Form


class FoldAborted(Exception):
    """The numbers of a region forbid folding it (a division by zero, a non-finite result)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _channel_values(constant) -> np.ndarray:
    return np.asarray(constant.load(), dtype=np.float64).reshape(-1)


def _apply_step(value: ConvForm, step: AffineStep) -> ConvForm:
    # Each value in a region has exactly one reader (the region's single-use rule), so a step may
    # overwrite its input's float64 weight instead of copying it.
    if step.kind == "batch_norm":
        gamma, beta, mean, var = (_channel_values(c) for c in step.values)
        return algebra.batch_norm(value, gamma, beta, mean, var, step.epsilon, in_place=True)
    if step.kind == "negate":
        return algebra.scale(value, -1.0, in_place=True)
    (constant,) = step.values
    v = _channel_values(constant)
    if step.kind == "scale":
        return algebra.scale(value, v, in_place=True)
    if step.kind == "divide":
        if np.any(v == 0):
            raise FoldAborted("DIVISION_BY_ZERO", f"divides by a constant '{constant.name}' that contains zeros")
        return algebra.scale(value, 1.0 / v, in_place=True)
    if step.kind == "shift":
        return algebra.shift(value, v)
    if step.kind == "unshift":
        return algebra.shift(value, -v)
    raise ValueError(f"unknown affine step {step.kind!r}")


def _evaluate_one(form: Form, operands: list[ConvForm], identity_channels: int) -> ConvForm:
    op = form.op
    if op is None:
        return algebra.identity_form(form.geometry.out_channels or identity_channels)
    if isinstance(op, ConvLeaf):
        bias = op.bias.load() if op.bias is not None else None
        return algebra.conv_form(op.weight.load(), bias, op.groups, op.stride, op.dilation, op.pads)
    if isinstance(op, AveragePoolLeaf):
        channels = form.geometry.out_channels or identity_channels
        return algebra.average_pool_form(channels, op.kernel, op.stride, op.dilation, op.pads)
    if isinstance(op, Passthrough):
        return operands[0]
    if isinstance(op, ChannelAffine):
        value = operands[0]
        for step in op.steps:
            value = _apply_step(value, step)
        return value
    if isinstance(op, Sum):
        terms = [v if sign > 0 else algebra.scale(v, -1.0) for v, (_, sign) in zip(operands, op.terms)]
        value = algebra.add(terms, form.geometry)
        for constant, sign in op.offsets:
            value = algebra.shift(value, sign * _channel_values(constant))
        return value
    raise TypeError(f"unknown linear op {type(op).__name__}")


def evaluate(root: Form) -> ConvForm:
    """Weight and bias (float64) of the one Conv that computes ``root`` from its source."""
    identity_channels = root.geometry.in_channels or root.geometry.out_channels or 1
    values: dict[int, ConvForm] = {}
    stack: list[tuple[Form, bool]] = [(root, False)]
    while stack:
        form, expanded = stack.pop()
        if id(form) in values:
            continue
        if not expanded:
            stack.append((form, True))
            stack.extend((o, False) for o in form.operands if id(o) not in values)
            continue
        values[id(form)] = _evaluate_one(form, [values[id(o)] for o in form.operands], identity_channels)
    result = values[id(root)]
    # One reduction instead of an elementwise mask: a sum of finite weights is finite.
    if not (np.isfinite(result.weight.sum()) and np.all(np.isfinite(result.bias))):
        raise FoldAborted("NON_FINITE", "the folded weights are not finite (inf or NaN in the block's constants)")
    return algebra.regroup(result)


def model_dtype(root: Form) -> int:
    """ONNX element type of the region: that of its Conv weights."""
    stack = [root]
    while stack:
        form = stack.pop()
        if isinstance(form.op, ConvLeaf):
            return form.op.weight.elem_type
        stack.extend(form.operands)
    return onnx.TensorProto.FLOAT


def to_model_dtype(values: np.ndarray, elem_type: int) -> np.ndarray:
    return values.astype(FLOAT_TYPES[elem_type])
