"""How an activation's int8 scale is chosen from what the calibration sets showed (pure numpy).

A symmetric int8 scale is ``threshold / 127``: values beyond the threshold clip, values within it
round to one of 255 levels.  The methods TensorRT users know:

* ``max``: the largest magnitude seen.  Nothing clips; one outlier coarsens every other value.
* ``percentile``: the magnitude below which ``percentile`` % of the values lie (99.99 unless told):
  the rare largest values clip, the rest get finer steps.
* ``entropy``: the threshold whose quantized distribution loses the least information about the
  measured one (the Kullback-Leibler divergence between the histogram of magnitudes clipped at
  the threshold and that histogram merged into 128 levels), the method of TensorRT's entropy
  calibrator as NVIDIA described it (Migacz, "8-bit Inference with TensorRT", GTC 2017).

Statistics are gathered one input set at a time (:class:`TensorStats`), so memory does not grow
with the number of sets: the magnitude histogram keeps :data:`BINS` bins over ``[0, top)``, and when
a set holds a larger value, ``top`` doubles (neighbouring bins merge exactly) until it fits.  Exact
zeros (half of a ReLU's output) are left out of the histogram: zero is exact at any scale, and a
spike of zeros in the first bin would otherwise pull the entropy method to the smallest threshold
it tries.  A tensor larger than :data:`HISTOGRAM_SAMPLES` values contributes every k-th value to
the histogram (k odd, about a million values per set); its largest magnitude is always exact.
Non-finite values (a ``-inf`` mask) are left out of every statistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .sqnr import QMAX

CALIB_METHODS = ("max", "percentile", "entropy")
DEFAULT_CALIB_METHOD = "percentile"  # the best held-out SQNR on the trained detector (benchmarks/int8_calibration.py)
DEFAULT_PERCENTILE = 99.99
BINS = 2048
LEVELS = 128  # int8 magnitudes 0..127: the quantized histogram's bins
ENTROPY_STEP = 4  # candidate thresholds every 4 bins from bin 128 to 2048
HISTOGRAM_SAMPLES = 1 << 20  # values per tensor and set the histogram takes (an even stride through larger tensors)


@dataclass
class TensorStats:
    """What the calibration sets showed of one tensor: range, energy and (when asked) a magnitude histogram."""

    histogram: bool = False
    channel_axis: int | None = None  # also keep the largest magnitude per channel on this axis
    absmax: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    sumsq: float = 0.0
    nonzero: int = 0
    count: int = 0
    top: float = 0.0
    counts: np.ndarray | None = None
    channel_absmax: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        """Take one set's values into the statistics."""
        x = np.asarray(x)
        if x.size == 0:
            return
        if self.channel_axis is not None:
            self._add_channels(x)
        flat = x.reshape(-1)
        low, high = float(flat.min()), float(flat.max())
        if not (math.isfinite(low) and math.isfinite(high)):  # nan or inf somewhere: leave those values out
            flat = flat[np.isfinite(flat)]
            if flat.size == 0:
                return
            low, high = float(flat.min()), float(flat.max())
        self.low, self.high = min(self.low, low), max(self.high, high)
        top = max(abs(low), abs(high))
        self.absmax = max(self.absmax, top)
        energy = float(np.vdot(flat, flat))
        if not math.isfinite(energy):  # float32 accumulation overflowed
            wide = flat.astype(np.float64)
            energy = float(wide @ wide)
        self.sumsq += energy
        self.nonzero += int(np.count_nonzero(flat))
        self.count += flat.size
        if self.histogram and top > 0:
            step = (flat.size + HISTOGRAM_SAMPLES - 1) // HISTOGRAM_SAMPLES | 1  # odd, so strides do not follow rows
            magnitude = np.abs(flat[::step])
            self._add_histogram(magnitude[magnitude > 0], top)

    def _add_channels(self, x: np.ndarray) -> None:
        moved = np.moveaxis(np.abs(x.astype(np.float64, copy=False)), self.channel_axis, 0)
        moved = np.where(np.isfinite(moved), moved, 0.0).reshape(moved.shape[0], -1)
        seen = moved.max(axis=1) if moved.shape[1] else np.zeros(moved.shape[0])
        self.channel_absmax = seen if self.channel_absmax is None else np.maximum(self.channel_absmax, seen)

    def _add_histogram(self, magnitude: np.ndarray, top: float) -> None:
        if self.counts is None:
            self.counts, self.top = np.zeros(BINS, np.int64), top
        while top >= self.top:  # double the range: pairs of bins merge, the upper half starts empty
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.concatenate([merged, np.zeros(BINS // 2, np.int64)])
            self.top *= 2.0
        index = np.minimum((magnitude * np.float32(BINS / self.top)).astype(np.intp), BINS - 1)
        self.counts += np.bincount(index, minlength=BINS)

    @property
    def width(self) -> float:
        return self.top / BINS


def merged(stats: list[TensorStats]) -> TensorStats:
    """The statistics of several tensors calibrated together (a scale group): their union."""
    if len(stats) == 1:
        return stats[0]
    out = TensorStats(histogram=any(s.counts is not None for s in stats))
    for s in stats:
        out.absmax = max(out.absmax, s.absmax)
        out.low, out.high = min(out.low, s.low), max(out.high, s.high)
        out.sumsq += s.sumsq
        out.nonzero += s.nonzero
        out.count += s.count
    tops = [s.top for s in stats if s.counts is not None]
    if tops:
        out.top = max(tops)
        out.counts = np.zeros(BINS, np.int64)
        for s in stats:
            if s.counts is None:
                continue
            counts, top = s.counts, s.top
            while top < out.top:
                counts = np.concatenate([counts.reshape(-1, 2).sum(axis=1), np.zeros(BINS // 2, np.int64)])
                top *= 2.0
            out.counts += counts
    return out


def percentile_threshold(stats: TensorStats, percentile: float) -> float:
    """The magnitude below which ``percentile`` % of the values lie (a bin's upper edge), at most the largest one."""
    if stats.counts is None or stats.counts.sum() == 0:
        return stats.absmax
    cumulative = np.cumsum(stats.counts)
    k = int(np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0))
    return float(min((k + 1) * stats.width, stats.absmax))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two unnormalized histograms over the bins where p is non-zero (q smoothed where it is zero)."""
    mask = p > 0
    p = p[mask] / p.sum()
    q = q[mask]
    total = q.sum()
    if total <= 0:
        return math.inf
    q = np.where(q > 0, q / total, 1e-12)
    return float(np.sum(p * np.log(p / q)))


def entropy_threshold(stats: TensorStats) -> float:
    """The threshold (a multiple of the bin width, from bin 128 up) that minimizes the KL divergence above."""
    if stats.counts is None or stats.counts.sum() == 0:
        return stats.absmax
    hist = stats.counts.astype(np.float64)
    used = int(np.max(np.nonzero(hist)[0])) + 1
    if used <= LEVELS:  # every value fits in 128 levels at full resolution: nothing to gain by clipping
        return stats.absmax
    best, best_i = math.inf, used
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    for i in range(LEVELS, used + 1, ENTROPY_STEP):
        p = hist[:i].copy()
        p[i - 1] += tail[i]
        edges = (np.arange(LEVELS + 1) * i) // LEVELS
        chunk = hist[:i]
        sums = np.add.reduceat(chunk, edges[:-1])
        filled = np.add.reduceat((chunk > 0).astype(np.float64), edges[:-1])
        per_bin = np.divide(sums, filled, out=np.zeros_like(sums), where=filled > 0)
        q = np.repeat(per_bin, np.diff(edges)) * (chunk > 0)
        divergence = _kl(p, q)
        if divergence < best:
            best, best_i = divergence, i
    return float(min(best_i * stats.width, stats.absmax))


def threshold(stats: TensorStats, method: str, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The clipping threshold ``method`` picks for ``stats``."""
    if method == "max":
        return stats.absmax
    if method == "percentile":
        return percentile_threshold(stats, percentile)
    if method == "entropy":
        return entropy_threshold(stats)
    raise ValueError(f"unknown calibration method {method!r}")


def predicted_sqnr_db(stats: TensorStats, limit: float) -> float:
    """The activation's SQNR under ``limit`` (scale ``limit / 127``), estimated from the statistics.

    Rounding noise: ``scale^2 / 12`` per non-zero value (exact zeros stay exact); clipping noise from
    the histogram (bin centres beyond the threshold), none without one.  Used to predict which
    layers cost the most, on calibration data only.
    """
    if stats.sumsq == 0:
        return math.inf
    if limit <= 0:
        return -math.inf
    scale = limit / QMAX
    noise = stats.nonzero * scale**2 / 12.0
    if stats.counts is not None and limit < stats.absmax:
        centres = (np.arange(BINS) + 0.5) * stats.width
        beyond = centres > limit
        noise += float(np.sum(stats.counts[beyond] * (centres[beyond] - limit) ** 2))
    return 10.0 * math.log10(stats.sumsq / noise) if noise > 0 else math.inf
