"""Calibration methods against hand computations: streamed histograms merge exactly, percentile and entropy
thresholds, zeros and non-finite values left out, the predicted activation SQNR, and --calib-method reaching
the written scales."""

import math

import numpy as np
import pytest

from qarep_onnx.int8.calibration_methods import (
    BINS,
    TensorStats,
    entropy_threshold,
    merged,
    percentile_threshold,
    predicted_sqnr_db,
    threshold,
)
from qarep_onnx.int8.sqnr import fake_quantize, sqnr_db


def test_streamed_histogram_equals_one_histogram_of_everything():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal(5000) * s for s in (0.5, 1.0, 7.0, 2.0)]  # the range grows twice: bins merge
    stats = TensorStats(histogram=True)
    for p in parts:
        stats.add(p)
    everything = np.abs(np.concatenate(parts))
    direct, _ = np.histogram(everything[everything > 0], bins=BINS, range=(0, stats.top))
    # the same histogram, but for values within float32 rounding of a bin edge (counted in the neighbour)
    assert stats.counts.sum() == direct.sum() and np.abs(np.cumsum(stats.counts) - np.cumsum(direct)).max() <= 3
    assert stats.absmax == everything.max() and stats.count == everything.size
    assert stats.sumsq == pytest.approx(float((everything.astype(np.float64) ** 2).sum()), rel=1e-5)


def test_percentile_is_a_bin_edge_at_or_above_the_exact_one():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(200_000)
    stats = TensorStats(histogram=True)
    stats.add(x)
    exact = np.sort(np.abs(x))[int(np.ceil(0.999 * x.size)) - 1]
    got = percentile_threshold(stats, 99.9)
    assert exact <= got <= exact + stats.width and got < stats.absmax
    assert threshold(stats, "max") == stats.absmax == np.abs(x).max()


def test_entropy_clips_a_sparse_tail_and_keeps_a_dense_range():
    rng = np.random.default_rng(2)
    bulk = rng.standard_normal(100_000)
    tail = TensorStats(histogram=True)
    tail.add(np.concatenate([bulk, [60.0, -55.0]]))  # two far outliers
    t = entropy_threshold(tail)
    assert 3.0 < t < 20.0  # clips the outliers, keeps the bulk
    uniform = TensorStats(histogram=True)
    uniform.add(rng.uniform(-1, 1, 100_000))
    assert entropy_threshold(uniform) > 0.9  # every level is in use: nothing worth clipping


def test_zeros_and_non_finite_values_are_left_out():
    stats = TensorStats(histogram=True)
    stats.add(np.array([0.0, 0.0, 0.0, 1.0, -2.0, np.inf, -np.inf, np.nan], np.float32))
    assert (stats.low, stats.high, stats.absmax) == (-2.0, 1.0, 2.0)
    assert stats.count == 5 and stats.nonzero == 2 and stats.counts.sum() == 2  # zeros: no histogram mass
    relu = TensorStats(histogram=True)
    relu.add(np.maximum(np.random.default_rng(3).standard_normal(50_000), 0))
    assert entropy_threshold(relu) > 1.5  # the spike of zeros does not pull the threshold down


def test_groups_merge_their_statistics():
    a, b = TensorStats(histogram=True), TensorStats(histogram=True)
    a.add(np.linspace(-1, 1, 1001))
    b.add(np.linspace(-8, 8, 1001))
    both = merged([a, b])
    assert both.absmax == 8.0 and both.counts.sum() == a.counts.sum() + b.counts.sum()
    assert both.top == max(a.top, b.top)


def test_predicted_activation_sqnr_matches_the_fake_quantized_one():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(100_000)
    stats = TensorStats(histogram=True)
    stats.add(x)
    for limit in (stats.absmax, percentile_threshold(stats, 99.9)):
        measured = sqnr_db(np.clip(x, -limit, limit) * 0 + x, fake_quantize(x, limit / 127))
        assert predicted_sqnr_db(stats, limit) == pytest.approx(measured, abs=0.5)
    assert predicted_sqnr_db(TensorStats(), 1.0) == math.inf  # nothing seen: no noise predicted
