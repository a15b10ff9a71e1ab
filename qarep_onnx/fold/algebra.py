"""Linear forms and the exact identities that combine them (pure numpy, float64).

Every tensor inside a re-parameterizable block is an affine function of one tensor X that one
linear operator ``L`` can compute: ``y = L(X; W, b)``.  Whatever ``L`` is (a convolution, a
transposed convolution, a dense product; :mod:`qarep_onnx.fold.kinds` says which), its weight is
held here output-channel first, ``(out, in / groups, *kernel)``, so one identity serves every kind:

* BatchNorm / per-channel Mul, Div:  ``t * L(X; W, b) = L(X; t[:, None..] * W, t * b)``
* per-channel Add, Sub of a constant: ``L(X; W, b) + c = L(X; W, b + c)``
* sum of branches over the same X:    ``L(X; W1, b1) + L(X; W2, b2) = L(X; W1' + W2', b1 + b2)``
  where ``W1'`` and ``W2'`` are the kernels embedded, centre-aligned, into one common kernel grid
  and one common group count (the gcd of the branches' groups).
* a per-channel affine before the operator: ``L(t * X + s; W, b) = L(X; W * t[in], b + sum(W * s[in]))``,
  exact when every output reads every tap of its kernel (the caller checks).
* identity ``X`` and ``AveragePool(X)`` are convolutions with a diagonal kernel.

:class:`Geometry` describes a form without its numbers so a region can be checked cheaply;
:class:`FormValues` carries the numbers and is only built when a region is actually folded.
Nothing here knows about ONNX: a geometry's ``kind`` is an opaque token of the kinds module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import reduce

import numpy as np

from ..errors import Code, Reason, Refused


def _refused(code: Code, message: str) -> Refused:
    """Forms that cannot be summed into one operator, and why."""
    return Refused(Reason(code, message))


@dataclass(frozen=True)
class Geometry:
    """Shape of ``L(X; W, b)`` without the numbers.

    ``kind`` is ``None`` for a *pointwise diagonal* form (the identity or a per-channel affine of
    X), whose spatial rank is not known yet: it takes the rank of whatever it is merged with, and
    its ``channels`` may be ``None`` until a constant or a merge fixes them.
    """

    out_channels: int | None
    in_channels: int | None
    groups: int | None  # None: "as many as channels" (diagonal)
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[int, ...]  # begin values for each axis, then end values
    kind: object | None = None  # a LeafKind of qarep_onnx.fold.kinds; None: diagonal
    output_padding: tuple[int, ...] = ()  # transposed convolutions only
    transposed_input: bool = False  # dense only: Gemm's transA, features on the input's first axis

    @property
    def rank(self) -> int:
        return len(self.kernel)

    @property
    def is_diagonal(self) -> bool:
        return self.kind is None

    def macs_per_output_pixel(self) -> int:
        """Multiply-accumulates per output position of an operator with this geometry."""
        cout = self.out_channels or 1
        cin_per_group = (self.in_channels or 1) // (self.groups or self.in_channels or 1)
        return cout * cin_per_group * math.prod(self.kernel)

    def with_channels(self, channels: int) -> Geometry:
        """A diagonal form whose channel count became known."""
        return replace(self, out_channels=channels, in_channels=channels, groups=channels)

    def with_pads(self, pads: tuple[int, ...]) -> Geometry:
        return replace(self, pads=tuple(pads))


def diagonal_geometry(channels: int | None) -> Geometry:
    """Geometry of the identity ``X`` (and of any per-channel affine function of X)."""
    return Geometry(channels, channels, channels, (), (), (), ())


def promoted(geometry: Geometry, rank: int, kind: object) -> Geometry:
    """A diagonal geometry seen as a 1x..x1 stride-1 convolution of the given rank and kind."""
    if not geometry.is_diagonal:
        return geometry
    ones = (1,) * rank
    return Geometry(geometry.out_channels, geometry.in_channels, geometry.groups, ones, ones, ones, (0,) * (2 * rank), kind)


def _fmt(values: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in values)


def merge_centre_aligned(geometries: list[Geometry], kind: object) -> Geometry:
    """The geometry of the sum of convolution forms (and diagonal ones) over the same X, or
    :class:`~qarep_onnx.errors.Refused`; the result is of ``kind``.

    Kernels are aligned on their centres: tap offsets ``d * (j - (k - 1) / 2)`` relative to the
    output position shifted by ``pad_begin - d * (k - 1) / 2``.  That shift (at both ends) and the
    stride must agree across branches, and every kernel must have a centre tap (odd size).  The
    merged kernel spans the largest half-width at the gcd of the dilations, and its groups are the
    gcd of the branches' groups.
    """
    ranks = {g.rank for g in geometries if not g.is_diagonal}
    if len(ranks) > 1:
        raise _refused(Code.RANK_MISMATCH, f"branches have different spatial ranks {sorted(ranks)}")
    cout, cin = channel_sets(geometries)
    if any(g.is_diagonal for g in geometries) and cout is not None and cin is not None and cout != cin:
        raise _refused(Code.CHANNEL_MISMATCH, f"an identity term needs as many output channels as input ({cout} != {cin})")
    rank = ranks.pop()
    forms = [promoted(g, rank, kind) for g in geometries]

    strides = {g.stride for g in forms}
    if len(strides) > 1:
        raise _refused(Code.STRIDE_MISMATCH, f"branches disagree on stride ({', '.join(_fmt(s) for s in sorted(strides))})")
    for g in forms:
        for k in g.kernel:
            if k % 2 == 0:
                raise _refused(Code.EVEN_KERNEL,
                               f"a branch has an even kernel {_fmt(g.kernel)}, which has no centre tap to align on")

    halves = [tuple(d * (k - 1) // 2 for d, k in zip(g.dilation, g.kernel)) for g in forms]
    begin_shifts = {tuple(g.pads[a] - h[a] for a in range(rank)) for g, h in zip(forms, halves)}
    end_shifts = {tuple(g.pads[rank + a] - h[a] for a in range(rank)) for g, h in zip(forms, halves)}
    if len(begin_shifts) > 1 or len(end_shifts) > 1:
        detail = ", ".join(f"kernel {_fmt(g.kernel)} pads {list(g.pads)}" for g in forms)
        raise _refused(Code.MISALIGNED, f"branch kernels are not centre-aligned (pads - dilation*(kernel-1)/2 differ: {detail})")
    begin, end = begin_shifts.pop(), end_shifts.pop()

    half = tuple(max(h[a] for h in halves) for a in range(rank))
    # Common tap spacing: every branch's taps sit on multiples of its dilation around the centre.
    dilation = []
    for a in range(rank):
        spacings = [g.dilation[a] for g in forms if g.kernel[a] > 1]
        dilation.append(reduce(math.gcd, spacings) if spacings else 1)
    kernel = tuple(2 * half[a] // dilation[a] + 1 for a in range(rank))
    pads = tuple(begin[a] + half[a] for a in range(rank)) + tuple(end[a] + half[a] for a in range(rank))

    group_counts = [g.groups if g.groups is not None else cin for g in forms]
    known_groups = [g for g in group_counts if g is not None]
    groups = reduce(math.gcd, known_groups) if known_groups else None
    return Geometry(cout, cin, groups, kernel, forms[0].stride, tuple(dilation), pads, kind)


def channel_sets(geometries: list[Geometry]) -> tuple[int | None, int | None]:
    """The output and input channel counts every branch agrees on (None where no branch knows)."""
    channels = {g.out_channels for g in geometries if g.out_channels is not None}
    in_channels = {g.in_channels for g in geometries if g.in_channels is not None}
    if len(channels) > 1 or len(in_channels) > 1:
        raise _refused(Code.CHANNEL_MISMATCH, f"branches disagree on channels (out {sorted(channels)}, in {sorted(in_channels)})")
    return next(iter(channels), None), next(iter(in_channels), None)


@dataclass
class FormValues:
    """The numbers of ``y = L(X; weight, bias)``, in float64, with the geometry they were built for."""

    weight: np.ndarray  # (out_channels, in_channels / groups, *kernel); (C, 1) when diagonal
    # float64, except a leaf's weight before any arithmetic (see leaf_values)
    bias: np.ndarray  # (out_channels,)
    geometry: Geometry


def leaf_values(weight: np.ndarray, bias: np.ndarray | None, geometry: Geometry) -> FormValues:
    """A leaf operator's numbers: its weight output-channel first, its bias (zeros when it has none).

    The weight keeps the float type it was stored in (exactly representable in float64) until the
    first arithmetic on it, which computes in float64: that saves a full copy of every weight.
    """
    w = np.asarray(weight)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
    return FormValues(w, b, geometry)


def identity_values(channels: int) -> FormValues:
    """``X`` itself: weight 1 on the diagonal, at the centre of a 1x..x1 kernel."""
    return FormValues(np.ones((channels, 1)), np.zeros(channels), diagonal_geometry(channels))


def average_pool_values(channels: int, geometry: Geometry) -> FormValues:
    """``AveragePool(X)`` counting padded positions: a depthwise kernel of ``1 / prod(kernel)``."""
    weight = np.full((channels, 1, *geometry.kernel), 1.0 / math.prod(geometry.kernel))
    return FormValues(weight, np.zeros(channels), geometry)


def _per_channel(values: np.ndarray | float, channels: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return np.broadcast_to(v, (channels,)) if v.size == 1 else v


def input_affine(form: FormValues, factor: np.ndarray, offset: np.ndarray) -> FormValues:
    """``L(factor * X + offset)`` as a form over X: each weight scaled by its input channel's factor,
    the offset pushed through the weights into the bias.

    Exact only when every output of ``L`` reads every tap of its kernel (no padding that reads the
    zero where ``factor * X + offset`` would have given ``offset``): the caller checks that.
    """
    cout, cin_per_group = form.weight.shape[:2]
    groups = form.geometry.groups or 1
    # Absolute input channel read by weight position [o, j]: j in output channel o's group.
    in_channel = (np.arange(cout) // (cout // groups))[:, None] * cin_per_group + np.arange(cin_per_group)[None, :]
    spatial = (1,) * (form.weight.ndim - 2)
    t = np.asarray(factor, np.float64).reshape(-1)
    s = np.asarray(offset, np.float64).reshape(-1)
    t = np.broadcast_to(t, (in_channel.max() + 1,)) if t.size == 1 else t
    s = np.broadcast_to(s, (in_channel.max() + 1,)) if s.size == 1 else s
    weight = np.asarray(form.weight, np.float64)
    shift = (weight * s[in_channel].reshape(cout, cin_per_group, *spatial)).reshape(cout, -1).sum(axis=1)
    return FormValues(weight * t[in_channel].reshape(cout, cin_per_group, *spatial), form.bias + shift, form.geometry)


def scale(form: FormValues, factor: np.ndarray | float, in_place: bool = False) -> FormValues:
    """``factor * y`` with a scalar or per-output-channel factor.

    ``in_place`` lets a caller that owns ``form`` (nothing else reads it) skip a copy of a float64
    weight; the result is the same.
    """
    channels = form.weight.shape[0]
    f = _per_channel(factor, channels).reshape((channels,) + (1,) * (form.weight.ndim - 1))
    if in_place and form.weight.dtype == np.float64 and form.weight.flags.writeable:
        w = np.multiply(form.weight, f, out=form.weight)
    else:
        w = form.weight * f
    return FormValues(w, form.bias * f.reshape(-1), form.geometry)


def shift(form: FormValues, offset: np.ndarray | float) -> FormValues:
    """``y + offset`` with a scalar or per-output-channel offset."""
    return FormValues(form.weight, form.bias + _per_channel(offset, form.weight.shape[0]), form.geometry)


def batch_norm(
    form: FormValues,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    epsilon: float,
    in_place: bool = False,
) -> FormValues:
    """Inference BatchNorm: ``t = gamma / sqrt(var + eps)``, ``W' = t W``, ``b' = t (b - mean) + beta``."""
    t = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(epsilon))
    centred = shift(form, -np.asarray(mean, np.float64))
    return shift(scale(centred, t, in_place), np.asarray(beta, np.float64))


def _accumulate(out: np.ndarray, form: FormValues, target: Geometry) -> None:
    """``out += form``'s kernel written in ``target``'s kernel grid and group count."""
    g = promoted(form.geometry, target.rank, target.kind)
    w = form.weight.reshape(form.weight.shape + (1,) * (target.rank + 2 - form.weight.ndim))
    cout = w.shape[0]
    cin = target.in_channels if target.in_channels is not None else cout
    groups = target.groups if target.groups is not None else cin

    spatial = []
    for a in range(target.rank):
        half_target = target.dilation[a] * (target.kernel[a] - 1) // 2
        half_form = g.dilation[a] * (g.kernel[a] - 1) // 2
        start = (half_target - half_form) // target.dilation[a]
        step = g.dilation[a] // target.dilation[a] if g.kernel[a] > 1 else 1
        spatial.append(slice(start, start + step * (g.kernel[a] - 1) + 1, step))

    form_groups = g.groups if g.groups is not None else cin
    ratio = form_groups // groups  # how many form groups share one target group
    if ratio == 1:
        out[(slice(None), slice(None), *spatial)] += w
        return
    # Output channel o of form group j reads inputs j*cpg..(j+1)*cpg; in the target's wider group
    # those sit at offset (j % ratio) * cpg.  Every (row, col) pair is distinct, so += is exact.
    cin_per_form_group = w.shape[1]
    out_channel = np.arange(cout)
    first_input = ((out_channel // (cout // form_groups)) % ratio) * cin_per_form_group
    rows = out_channel[:, None]
    cols = first_input[:, None] + np.arange(cin_per_form_group)[None, :]
    out[(rows, cols, *spatial)] += w


def _kernel_shape(target: Geometry, channels: int) -> tuple[int, ...]:
    cin = target.in_channels if target.in_channels is not None else channels
    groups = target.groups if target.groups is not None else cin
    return (channels, cin // groups, *target.kernel)


def embed(form: FormValues, target: Geometry) -> np.ndarray:
    """``form``'s kernel written in ``target``'s kernel grid and group count (zeros elsewhere)."""
    out = np.zeros(_kernel_shape(target, form.weight.shape[0]))
    _accumulate(out, form, target)
    return out


def add(forms: list[FormValues], target: Geometry, out: np.ndarray | None = None) -> FormValues:
    """Sum of forms over the same X, as one form with the merged geometry ``target``.

    ``out``, when given, is a float64 array of the result's shape to write the weight into.
    """
    bias = sum(f.bias for f in forms)
    if target.is_diagonal:
        return FormValues(sum(f.weight for f in forms), bias, target)
    # Start from a copy of a branch already laid out like the result (usually the largest kernel),
    # then add the others into it: one pass less over the largest weight than zeros + add.
    shape = _kernel_shape(target, forms[0].weight.shape[0])
    base = next((i for i, f in enumerate(forms) if f.weight.shape == shape and _same_layout(f.geometry, target)), None)
    weight = np.empty(shape) if out is None else out
    if base is not None:
        np.copyto(weight, forms[base].weight)
    else:
        weight.fill(0.0)
    for i, f in enumerate(forms):
        if i != base:  # by position: the same form may be summed twice, as in Add(y, y)
            _accumulate(weight, f, target)
    return FormValues(weight, bias, target)


def _same_layout(g: Geometry, target: Geometry) -> bool:
    return g.kernel == target.kernel and g.dilation == target.dilation and g.groups == target.groups


def regroup(form: FormValues) -> FormValues:
    """The same conv with the most groups its weight allows (zero blocks off the diagonal dropped).

    Branches with different group counts merge densely (the gcd of their groups); when the merged
    weight is still block-diagonal for a larger group count, the cheaper grouped conv is exact.
    """
    g = form.geometry
    cout, cpg = form.weight.shape[:2]
    cin, groups = cpg * g.groups, g.groups
    candidates = [n for n in range(math.gcd(cout, cin), groups, -1) if n % groups == 0 and cout % n == 0 and cin % n == 0]
    if not candidates or np.all(np.any(form.weight[0].reshape(cpg, -1) != 0, axis=1)):
        return form  # output channel 0 reads every input of its group: no larger group count fits
    out_channel = np.arange(cout)
    absolute_input = (out_channel // (cout // groups))[:, None] * cpg + np.arange(cpg)[None, :]
    nonzero = np.any(form.weight.reshape(cout, cpg, -1) != 0, axis=2)
    for n in candidates:
        first = (out_channel // (cout // n))[:, None] * (cin // n)
        inside = (absolute_input >= first) & (absolute_input < first + cin // n)
        if not np.any(nonzero & ~inside):
            weight = form.weight[inside].reshape(cout, cin // n, *form.weight.shape[2:])
            return FormValues(weight, form.bias, replace(g, groups=n))
    return form


def channel_coarseness(weight: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Per output channel, how coarsely ``stored`` (``weight`` in some float type) keeps it: the rms of
    half the type's spacing at each stored value over the rms of the weight.

    A channel of normal numbers gets at most half the type's epsilon (the unit roundoff); one whose
    values sit below the type's normal range, where fewer bits remain, gets more.  Zero channels get 0.
    """
    rows = weight.reshape(weight.shape[0], -1).astype(np.float64, copy=False)
    half_spacing = np.spacing(np.abs(stored.reshape(rows.shape))).astype(np.float64) / 2
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    spacings = np.sqrt(np.einsum("ij,ij->i", half_spacing, half_spacing))
    return np.divide(spacings, norms, out=np.zeros_like(norms), where=norms > 0)
