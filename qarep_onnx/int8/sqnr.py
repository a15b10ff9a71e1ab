"""The arithmetic of symmetric int8 quantization and of the figures that judge it (pure numpy).

TensorRT quantizes symmetrically: zero point 0, ``q = clip(round(x / scale), -127, 127)``, one scale
per tensor for activations and one per output channel for weights.  The scale that holds a tensor
exactly up to its largest magnitude is ``absmax / 127`` (max calibration); rounding is half to even,
as ONNX QuantizeLinear specifies.  Everything is computed in float64, whatever the weights' type.

SQNR (signal-to-quantization-noise ratio) in dB is ``10 log10(sum(x^2) / sum((x - q(x))^2))``:
+inf when nothing moved, 6 dB per bit of effective resolution.  Independent noise sources add their
powers, which :func:`combined_sqnr_db` uses to predict a layer's total from its weight and activation
figures.
"""

from __future__ import annotations

import math

import numpy as np

QMAX = 127  # symmetric int8: [-127, 127] (TensorRT's weight range; -128 is never produced)


def symmetric_scale(absmax: np.ndarray | float) -> np.ndarray:
    """``absmax / 127``; an all-zero tensor or channel gets scale 1 (its zeros stay exact with any scale)."""
    absmax = np.asarray(absmax, dtype=np.float64)
    return np.where(absmax > 0, absmax / QMAX, 1.0)


def fake_quantize(x: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """``x`` quantized to int8 with ``scale`` (broadcast against ``x``) and dequantized again, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.rint(x / scale), -QMAX, QMAX) * scale


def channel_absmax(w: np.ndarray, axis: int) -> np.ndarray:
    """The largest magnitude of each slice of ``w`` along ``axis`` (one value per output channel)."""
    w = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0)
    return np.abs(w.reshape(w.shape[0], -1)).max(axis=1) if w.size else np.zeros(w.shape[0])


def per_channel_scale(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel scales shaped to broadcast against ``w`` along ``axis``."""
    shape = [1] * np.ndim(w)
    shape[axis] = -1
    return symmetric_scale(channel_absmax(w, axis)).reshape(shape)


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    """``10 log10(sum(ref^2) / sum((ref - approx)^2))``; +inf when they are equal, -inf for a zero reference that moved."""
    reference = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((reference - np.asarray(approximation, dtype=np.float64)) ** 2))
    signal = float(np.sum(reference**2))
    return power_ratio_db(signal, noise)


def power_ratio_db(signal: float, noise: float) -> float:
    """``10 log10(signal / noise)`` with the limits spelled out (noise 0: +inf; signal 0 with noise: -inf)."""
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def channel_sqnr_db(reference: np.ndarray, approximation: np.ndarray, axis: int) -> np.ndarray:
    """The SQNR of each slice along ``axis`` (each output channel on its own)."""
    r = np.moveaxis(np.asarray(reference, dtype=np.float64), axis, 0).reshape(np.shape(reference)[axis], -1)
    a = np.moveaxis(np.asarray(approximation, dtype=np.float64), axis, 0).reshape(r.shape)
    return np.array([power_ratio_db(float(np.sum(x**2)), float(np.sum((x - y) ** 2))) for x, y in zip(r, a)])


def spread(channel_max: np.ndarray) -> float:
    """Max channel absmax over the median one: how many times a per-tensor scale is too coarse for a typical channel."""
    channel_max = np.asarray(channel_max, dtype=np.float64)
    if channel_max.size == 0:
        return 1.0
    median = float(np.median(channel_max))
    top = float(channel_max.max())
    if median == 0:
        return math.inf if top > 0 else 1.0
    return top / median


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """``<a, b> / (|a| |b|)`` over all elements; 1.0 when both are zero, 0.0 when only one is."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def combined_sqnr_db(*figures: float) -> float:
    """The SQNR of independent noises added together (their powers add): ``-10 log10(sum 10^(-s/10))``."""
    total = sum(10.0 ** (-s / 10.0) for s in figures if s != math.inf)
    if total == 0:
        return math.inf
    return -10.0 * math.log10(total)
