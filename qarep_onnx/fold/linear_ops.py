"""What a non-leaf operator does to a linear form, as small frozen descriptions that compute their numbers.

:mod:`.ops` reads each ONNX node into one of these (or a reason it is none); :mod:`.regions` grows
forms through them (``grow``), and :mod:`.evaluate` asks each for its numbers (``evaluate``), given
the numbers of its operands:

=====================  ===================================================================
:class:`Relayout`       a per-channel affine seen through a layout change that keeps the channels
:class:`ChannelAffine`  a chain of per-channel steps ``y -> y * t`` / ``y + s`` (BatchNorm, Mul,
                        Div, Add, Sub of a constant, Neg)
:class:`Sum`            ``sum_k c_k y_k + sum_j c_j const_j`` of forms over the same X (Add, Sub, Sum)
:class:`Passthrough`    ``y`` itself (Identity, inference Dropout)
:class:`AveragePool`    a depthwise kernel of ``1/prod(k)``: a branch, though not a leaf
:class:`ZeroPad`        zeros around ``X`` that a Conv reading it takes as its own padding
=====================  ===================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ..errors import Code, Reason, Refused
from ..graph.tensors import Constant
from . import algebra
from .algebra import FormValues, Geometry
from .kinds.conv import CONV


def constant_axis(shape: tuple[int, ...], rank: int | None) -> int | None | Reason:
    """The one axis of a rank-``rank`` tensor along which a constant of ``shape`` varies once broadcast.

    ``None`` for a constant that is one value everywhere; a :class:`Reason` when it varies along
    several axes, would raise the tensor's rank, or the rank is unknown.  Whether that axis is the
    tensor's channel axis is for the caller to judge.
    """
    if all(d == 1 for d in shape) and (len(shape) <= 1 or (rank is not None and len(shape) <= rank)):
        return None  # one value, broadcast to anything without changing its shape
    if rank is None:
        return Reason(Code.NOT_PER_CHANNEL, f"a constant of shape {list(shape)} on a tensor of unknown rank")
    if len(shape) > rank:
        return Reason(Code.NOT_PER_CHANNEL, f"a constant of shape {list(shape)} that would raise the rank of a rank-{rank} tensor")
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    varying = [a for a, d in enumerate(padded) if d != 1]
    if len(varying) > 1:
        return Reason(
            Code.NOT_PER_CHANNEL,
            f"a constant of shape {list(shape)} that varies along axes {varying} of a rank-{rank} tensor, not along "
            "its channels alone",
        )
    return varying[0]


def dim(shape: tuple[int, ...], rank: int | None, axis: int) -> int:
    """The size of a constant of ``shape`` on ``axis`` once broadcast to rank ``rank``."""
    padded = (1,) * ((rank or len(shape)) - len(shape)) + tuple(shape)
    return padded[axis]


def channel_values(constant: Constant) -> np.ndarray:
    return np.asarray(constant.load(), dtype=np.float64).reshape(-1)


# -- per-channel steps -------------------------------------------------------------------------------
# Each value in a region has exactly one reader (the region's single-use rule), so a step may
# overwrite its input's float64 weight instead of copying it.


@dataclass(frozen=True)
class _Step:
    """One per-channel step; ``values`` are its constants, ``adds_offset`` whether it can make a bias."""

    values: tuple[Constant, ...] = ()
    adds_offset: ClassVar[bool] = False
    is_batch_norm: ClassVar[bool] = False
    acts: ClassVar[str] = "a constant varies along"  # how a message says where it acts

    def axis(self, constant: Constant, rank: int | None) -> tuple[int | None | Reason, int | None]:
        """The axis ``constant`` acts on in a rank-``rank`` tensor (None: every axis alike), and its size there."""
        found = constant_axis(constant.shape, rank)
        count = None if found is None or isinstance(found, Reason) else dim(constant.shape, rank, found)
        return found, count

    def apply(self, value: FormValues) -> FormValues:
        raise NotImplementedError


@dataclass(frozen=True)
class Scale(_Step):
    """``y * c``."""

    def apply(self, value: FormValues) -> FormValues:
        return algebra.scale(value, channel_values(self.values[0]), in_place=True)


@dataclass(frozen=True)
class Divide(_Step):
    """``y / c``."""

    def apply(self, value: FormValues) -> FormValues:
        (constant,) = self.values
        v = channel_values(constant)
        if np.any(v == 0):
            raise Refused(Reason(Code.DIVISION_BY_ZERO, f"divides by a constant '{constant.name}' that contains zeros"))
        return algebra.scale(value, 1.0 / v, in_place=True)


@dataclass(frozen=True)
class Shift(_Step):
    """``y + c``, or ``y - c`` when ``subtract``."""

    subtract: bool = False
    adds_offset = True

    def apply(self, value: FormValues) -> FormValues:
        v = channel_values(self.values[0])
        return algebra.shift(value, -v if self.subtract else v)


@dataclass(frozen=True)
class Negate(_Step):
    """``-y``."""

    def apply(self, value: FormValues) -> FormValues:
        return algebra.scale(value, -1.0, in_place=True)


@dataclass(frozen=True)
class BatchNorm(_Step):
    """Inference BatchNormalization; ``values`` are gamma, beta, mean and var.  It normalizes axis 1."""

    epsilon: float = 1e-5
    adds_offset = True
    is_batch_norm = True
    acts = "BatchNormalization normalizes"

    def axis(self, constant: Constant, rank: int | None) -> tuple[int | None | Reason, int | None]:
        if rank is not None and rank < 2:
            return Reason(Code.NOT_PER_CHANNEL, f"a BatchNormalization on a rank-{rank} tensor"), None
        return 1, constant.shape[0]

    def apply(self, value: FormValues) -> FormValues:
        gamma, beta, mean, var = (channel_values(c) for c in self.values)
        return algebra.batch_norm(value, gamma, beta, mean, var, self.epsilon, in_place=True)


Step = Scale | Divide | Shift | Negate | BatchNorm


# -- descriptions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelAffine:
    x: str
    steps: tuple[Step, ...]

    @property
    def constants(self) -> tuple[Constant, ...]:
        return tuple(c for step in self.steps for c in step.values)

    def grow(self, finder, i: int):
        return finder.grow_affine(i, self)

    def evaluate(self, form, operands: list[FormValues], context) -> FormValues:
        value = operands[0]
        for step in self.steps:
            value = step.apply(value)
        return value


@dataclass(frozen=True)
class Sum:
    """``sum_k c_k terms_k + sum_j c_j offsets_j``: tensors and constants, each with its coefficient."""

    terms: tuple[tuple[str, float], ...]
    offsets: tuple[tuple[Constant, float], ...]

    def grow(self, finder, i: int):
        return finder.grow_sum(i, self)

    def evaluate(self, form, operands: list[FormValues], context) -> FormValues:
        terms = [v if c == 1.0 else algebra.scale(v, c) for v, (_, c) in zip(operands, self.terms)]
        g: Geometry = form.geometry
        out = None
        if context.pool is not None and not g.is_diagonal:
            out = context.pool.take((terms[0].weight.shape[0], g.in_channels // g.groups, *g.kernel))
        value = algebra.add(terms, g, out)
        for constant, c in self.offsets:
            value = algebra.shift(value, c * channel_values(constant))
        return value


@dataclass(frozen=True)
class Passthrough:
    x: str

    def grow(self, finder, i: int):
        return finder.grow_passthrough(i, self)

    def evaluate(self, form, operands: list[FormValues], context) -> FormValues:
        return operands[0]


@dataclass(frozen=True)
class AveragePool:
    """An AveragePool that counts padded positions: the depthwise convolution of ``1 / prod(kernel)``."""

    x: str
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[int, ...]

    def geometry(self, channels: int | None) -> Geometry:
        return CONV.pool_geometry(channels, self.kernel, self.stride, self.dilation, self.pads)

    def grow(self, finder, i: int):
        return finder.grow_pool(i, self)

    def evaluate(self, form, operands: list[FormValues], context) -> FormValues:
        return algebra.average_pool_values(form.geometry.out_channels or context.identity_channels, form.geometry)


@dataclass(frozen=True)
class Relayout:
    """Reshape, Flatten, Squeeze or Unsqueeze of a per-channel affine of X that keeps the channels on one axis.

    When the channels' axis lands on one axis of the output, in order, with the same elements after it,
    every element keeps its channel: ``R(t * X + s) = t * R(X) + s`` per channel.  The node then moves in
    front of the affine (it reads X instead, its output keeps its name), and a leaf reading it takes the
    affine over, as tf2onnx's Keras Dense head reads a BatchNorm through ``Reshape [N,C,1,1] -> [N,C]``.
    """

    x: str

    def grow(self, finder, i: int):
        index = finder.index
        out = index.nodes[i].output[0]
        affine = finder.forms.get(self.x) if index.is_single_use(self.x, i) else None
        if affine is None or affine.op is None or affine.has_leaf or not affine.geometry.is_diagonal:
            return None  # only a per-channel affine of a tensor moves behind a layout change
        moved, axis = _channel_axis_after(index, affine, self.x, out)
        if not moved:
            return None
        return replace(affine, output=out, source=out, op=self, node=i, operands=(affine,), axis=axis,
                       rank=index.rank(out), pad_nodes=(), rewire=affine.source)

    def evaluate(self, form, operands: list[FormValues], context) -> FormValues:
        return operands[0]


def _channel_axis_after(index, affine, before: str, after: str) -> tuple[bool, int | None]:
    """Whether a layout change ``before -> after`` keeps the channels of ``affine`` on one axis, and which."""
    if affine.axis is None:
        return True, None  # one value for every channel: any layout keeps it
    rank_in, rank_out = index.rank(before), index.rank(after)
    if rank_in is None or rank_out is None or affine.axis >= rank_in:
        return False, None
    dims_in = [index.dim(before, k) for k in range(rank_in)]
    dims_out = [index.dim(after, k) for k in range(rank_out)]
    channels, inner = dims_in[affine.axis], dims_in[affine.axis + 1:]
    # The affine must not have broadcast X to more channels than it has (a symbolic C fed as 1).
    if channels is None or index.dim(affine.source, affine.axis) != channels or None in inner:
        return False, None
    for k in range(rank_out):
        tail = dims_out[k + 1:]
        if dims_out[k] == channels and None not in tail and math.prod(tail) == math.prod(inner):
            return True, k
    return False, None


@dataclass(frozen=True)
class ZeroPad:
    """``Pad(X)`` with zeros; ``pads`` per axis of X (begins, then ends), or per ``axes`` when only some are named."""

    x: str
    pads: tuple[int, ...]
    axes: tuple[int, ...] | None  # None: every axis, in order

    def grow(self, finder, i: int):
        return None  # only a Conv reading it takes it over (as its own padding)
