"""The int8 arithmetic against hand computations: rounding, clipping, scales, SQNR, spread, cosine."""

import math

import numpy as np
import pytest

from qarep_onnx.int8.sqnr import (
    channel_absmax,
    channel_sqnr_db,
    combined_sqnr_db,
    cosine_similarity,
    fake_quantize,
    per_channel_scale,
    spread,
    sqnr_db,
    symmetric_scale,
)


def _hand_sqnr(values, scale):
    """SQNR of symmetric int8 with Python scalars: round() is half-to-even, like ONNX QuantizeLinear."""
    signal = noise = 0.0
    for x in values:
        q = max(-127, min(127, round(x / scale))) * scale
        signal += x * x
        noise += (x - q) ** 2
    return 10 * math.log10(signal / noise)


def test_rounding_is_half_to_even_and_clipped_to_127():
    out = fake_quantize(np.array([0.5, 1.5, 2.5, -0.5, -2.5, 300.0, -300.0]), 1.0)
    assert out.tolist() == [0.0, 2.0, 2.0, 0.0, -2.0, 127.0, -127.0]


def test_per_tensor_sqnr_of_a_small_tensor_matches_the_hand_computation():
    w = np.array([[0.5, -0.25, 0.1], [0.02, 0.013, -0.007]])
    scale = 0.5 / 127
    # 0.5 -> 127 exactly; -0.25 / scale = -63.5 -> -64 (half to even); 0.1 / scale = 25.4 -> 25;
    # 0.02 / scale = 5.08 -> 5; 0.013 / scale = 3.302 -> 3; -0.007 / scale = -1.778 -> -2
    expected = 10 * math.log10(
        (0.25 + 0.0625 + 0.01 + 0.0004 + 0.000169 + 0.000049)
        / ((-0.25 + 64 * scale) ** 2 + (0.1 - 25 * scale) ** 2 + (0.02 - 5 * scale) ** 2 + (0.013 - 3 * scale) ** 2 + (-0.007 + 2 * scale) ** 2)
    )
    assert symmetric_scale(np.abs(w).max()) == pytest.approx(scale)
    assert sqnr_db(w, fake_quantize(w, scale)) == pytest.approx(expected, abs=1e-9)
    assert sqnr_db(w, fake_quantize(w, scale)) == pytest.approx(_hand_sqnr(w.reshape(-1), scale), abs=1e-9)


def test_per_channel_scales_follow_the_chosen_axis():
    w = np.array([[0.5, -0.25, 0.1], [0.02, 0.013, -0.007]])
    scales = per_channel_scale(w, 0)
    assert scales.shape == (2, 1) and scales.reshape(-1) == pytest.approx([0.5 / 127, 0.02 / 127])
    q = fake_quantize(w, scales)
    # each channel on its own scale: the small channel is now resolved as finely as the large one
    noise = sum(((w[i] - q[i]) ** 2).sum() for i in range(2))
    assert sqnr_db(w, q) == pytest.approx(10 * math.log10((w**2).sum() / noise))
    assert channel_sqnr_db(w, q, 0) == pytest.approx([_hand_sqnr(w[0], 0.5 / 127), _hand_sqnr(w[1], 0.02 / 127)])
    assert sqnr_db(w, q) > sqnr_db(w, fake_quantize(w, 0.5 / 127))
    assert per_channel_scale(w.T, 1).shape == (1, 2)
    assert channel_absmax(w.T, 1).tolist() == [0.5, 0.02]


def test_zero_channels_stay_exact():
    w = np.array([[0.0, 0.0], [1.0, -1.0]])
    assert symmetric_scale(channel_absmax(w, 0)).tolist() == [1.0, 1 / 127]
    assert sqnr_db(w, fake_quantize(w, per_channel_scale(w, 0))) == math.inf


def test_spread_cosine_and_combined_noise():
    assert spread(np.array([1.0, 2.0, 3.0, 50.0])) == pytest.approx(50 / 2.5)
    assert spread(np.array([0.0, 0.0, 1.0])) == math.inf
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(1 / math.sqrt(2))
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    # two equal noises: 3 dB worse; an exact one adds nothing
    assert combined_sqnr_db(40.0, 40.0) == pytest.approx(40 - 10 * math.log10(2))
    assert combined_sqnr_db(40.0, math.inf) == pytest.approx(40.0)
    assert sqnr_db(np.array([0.0]), np.array([1.0])) == -math.inf


def test_an_empty_output_measures_nothing_and_only_empty_outputs_are_an_error():
    import pytest

    from qarep_onnx.errors import UsageError
    from qarep_onnx.int8.measure import compare_outputs

    full = {"y": np.ones(4), "empty": np.zeros((0, 3))}
    moved = {"y": np.ones(4) * 1.01, "empty": np.zeros((0, 3))}
    (quality,) = compare_outputs(["y", "empty"], [full], [moved])
    assert quality.name == "y" and 39 < quality.sqnr_db < 41
    with pytest.raises(UsageError, match="empty"):
        compare_outputs(["empty"], [full], [moved])
