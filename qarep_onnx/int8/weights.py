"""The weight report: how well int8 holds each layer's weights, with no calibration and no run.

For each layer: the weight range, the per-output-channel spread (largest channel absmax over the
median), the SQNR with one per-tensor scale and with one scale per output channel, and the SQNR of
the channel a per-tensor scale serves worst.  A layer is flagged as an outlier when

* its spread is at least :data:`SPREAD_LIMIT`: a per-tensor scale then spends more than 3 bits of
  every typical channel on one channel's range (TensorRT quantizes weights per channel, but many
  other int8 paths, and every activation, use one scale per tensor); or
* even per-channel scales leave it under :data:`SQNR_LIMIT_DB`: an outlier inside channels, such
  as a folded identity branch's large centre tap.  Dense float32 weights of trained or initialised
  layers land near 40-48 dB per channel (measured on the fixtures' unfolded layers), so 30 dB
  is 10 dB, over 1.5 bits, worse than usual.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .layers import Layer
from .report import LayerWeights
from .sqnr import (
    channel_absmax,
    channel_sqnr_db,
    fake_quantize,
    per_channel_scale,
    spread,
    sqnr_db,
    symmetric_scale,
)

SPREAD_LIMIT = 8.0
SQNR_LIMIT_DB = 30.0


def layer_weights(layer: Layer, from_fold: bool = False) -> LayerWeights:
    """The figures of one layer's weights."""
    w = np.asarray(layer.weight, dtype=np.float64)
    per_tensor = fake_quantize(w, symmetric_scale(np.abs(w).max() if w.size else 0.0))
    per_channel = fake_quantize(w, per_channel_scale(w, layer.axis))
    channels = channel_absmax(w, layer.axis)
    worst = channel_sqnr_db(w, per_tensor, layer.axis)
    figures = {
        "spread": spread(channels),
        "sqnr_per_tensor_db": sqnr_db(w, per_tensor),
        "sqnr_per_channel_db": sqnr_db(w, per_channel),
        "worst_channel_per_tensor_db": float(worst.min()) if worst.size else float("inf"),
    }
    reasons = []
    if figures["spread"] >= SPREAD_LIMIT:
        top = int(np.argmax(channels))
        reasons.append(f"output channel {top} spans {figures['spread']:.3g}x the median channel's range")
    if figures["sqnr_per_channel_db"] < SQNR_LIMIT_DB:
        reasons.append(f"per-channel SQNR {figures['sqnr_per_channel_db']:.1f} dB < {SQNR_LIMIT_DB:g} dB")
    return LayerWeights(
        name=layer.name,
        op_type=layer.op_type,
        weight=layer.weight_name,
        shape=tuple(int(d) for d in w.shape),
        axis=layer.axis,
        weight_min=float(w.min()) if w.size else 0.0,
        weight_max=float(w.max()) if w.size else 0.0,
        outlier=bool(reasons),
        reasons=tuple(reasons),
        from_fold=from_fold,
        **figures,
    )


def weight_report(layers: Iterable[Layer], folded_names: Iterable[str] = ()) -> list[LayerWeights]:
    """Figures for every layer; ``folded_names`` are the Convs the fold wrote."""
    folded = set(folded_names)
    return [layer_weights(layer, layer.name in folded) for layer in layers]
