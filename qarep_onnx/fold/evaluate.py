"""Turn a region's symbolic form into the numbers of its single operator (Conv, ConvTranspose, Gemm/MatMul).

Walks the form tree bottom-up (iteratively: deep chains must not hit Python's recursion limit),
reading each constant once, applying the identities of :mod:`qarep_onnx.algebra` in float64, and
casting to the model's element type once, at the end.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

from ..errors import Code, Reason, Refused
from ..graph.tensors import FLOAT_TYPES
from . import algebra
from .algebra import ConvForm
from .ops import (
    AffineStep,
    AveragePoolLeaf,
    ChannelAffine,
    ConvLeaf,
    ConvTransposeLeaf,
    DenseLeaf,
    Passthrough,
    Sum,
)
from .regions import Form


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
            raise Refused(Reason(Code.DIVISION_BY_ZERO, f"divides by a constant '{constant.name}' that contains zeros"))
        return algebra.scale(value, 1.0 / v, in_place=True)
    if step.kind == "shift":
        return algebra.shift(value, v)
    if step.kind == "unshift":
        return algebra.shift(value, -v)
    raise ValueError(f"unknown affine step {step.kind!r}")


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


def _leaf_values(op, geometry) -> ConvForm:
    """A leaf's weight, output-channel first ``(out, in / groups, *kernel)``, and its bias."""
    bias = op.bias.load() if op.bias is not None else None
    if isinstance(op, ConvLeaf):
        return algebra.conv_form(op.weight.load(), bias, op.groups, op.stride, op.dilation, geometry.pads)
    if isinstance(op, ConvTransposeLeaf):
        weight = op.weight.load()  # (in, out / groups, *kernel)
        cin, cout_per_group, *kernel = weight.shape
        g = op.groups
        weight = weight.reshape(g, cin // g, cout_per_group, *kernel).swapaxes(1, 2).reshape(g * cout_per_group, cin // g, *kernel)
        b = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, np.float64).reshape(-1)
        return ConvForm(weight, b, geometry)
    # Gemm: alpha * X W' + beta * C, W' = B (transB) or B^T; MatMul: X B.
    b_matrix = op.weight.load()
    weight = b_matrix if op.trans_b else b_matrix.T
    if op.alpha != 1.0:
        weight = weight * np.float64(op.alpha)
    out = weight.shape[0]
    if bias is None:
        b = np.zeros(out)
    else:
        b = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (out,)) * op.beta
    return ConvForm(weight, np.array(b, np.float64), geometry)


def _evaluate_one(form: Form, operands: list[ConvForm], identity_channels: int, pool: ScratchPool | None) -> ConvForm:
    op = form.op
    if op is None:
        return algebra.identity_form(form.geometry.out_channels or identity_channels)
    if isinstance(op, (ConvLeaf, ConvTransposeLeaf, DenseLeaf)):
        value = _leaf_values(op, form.geometry)
        for affine in operands:  # the per-channel affines of its input it took over, nearest first
            value = algebra.input_affine(value, affine.weight.reshape(-1), affine.bias)
        return value
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
        g = form.geometry
        out = None
        if pool is not None and not g.is_diagonal:
            out = pool.take((terms[0].weight.shape[0], g.in_channels // g.groups, *g.kernel))
        value = algebra.add(terms, g, out)
        for constant, sign in op.offsets:
            value = algebra.shift(value, sign * _channel_values(constant))
        return value
    raise TypeError(f"unknown linear op {type(op).__name__}")


def evaluate(root: Form, pool: ScratchPool | None = None) -> ConvForm:
    """Weight and bias (float64) of the one Conv that computes ``root`` from its source.

    With a ``pool`` the result may live in the pool's buffers: copy it out before releasing them.
    """
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
        values[id(form)] = _evaluate_one(form, [values[id(o)] for o in form.operands], identity_channels, pool)
    result = values[id(root)]
    # One reduction instead of an elementwise mask: a sum of finite weights is finite.
    if not (np.isfinite(result.weight.sum()) and np.all(np.isfinite(result.bias))):
        raise Refused(Reason(Code.NON_FINITE, "the folded weights are not finite (inf or NaN in the block's constants)"))
    return algebra.regroup(result)


def folded_conv(root: Form, pool: ScratchPool | None = None) -> ConvForm:
    """The region's single Conv, its weight and bias in the model's element type (never pooled)."""
    # Overflow and NaN are checked for explicitly; numpy must not warn on the user's terminal.
    with np.errstate(all="ignore"):
        return _folded_conv(root, pool)


def _folded_conv(root: Form, pool: ScratchPool | None) -> ConvForm:
    try:
        values = evaluate(root, pool)
        elem_type = model_dtype(root)
        weight = values.weight.astype(FLOAT_TYPES[elem_type])
        bias = values.bias.astype(FLOAT_TYPES[elem_type])
        if not (np.isfinite(weight.sum(dtype=np.float64)) and np.all(np.isfinite(bias))):
            name = onnx.TensorProto.DataType.Name(elem_type)
            raise Refused(Reason(Code.NON_FINITE, f"the folded weights overflow {name}; the block is kept as it is"))
        return ConvForm(weight, bias, values.geometry)
    finally:
        if pool is not None:
            pool.release()


def model_dtype(root: Form) -> int:
    """ONNX element type of the region: that of its Conv weights."""
    stack = [root]
    while stack:
        form = stack.pop()
        if isinstance(form.op, (ConvLeaf, ConvTransposeLeaf, DenseLeaf)):
            return form.op.weight.elem_type
        stack.extend(form.operands)
    return onnx.TensorProto.FLOAT
