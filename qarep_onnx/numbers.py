"""Facts about float numbers used across the tool: which figures strict JSON can hold (a non-finite
number is written as null, never as NaN or Infinity) and which float types have a normal range a
network's constants can leave."""

from __future__ import annotations

import math

import numpy as np


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float when it is finite, else None."""
    return float(x) if x is not None and math.isfinite(x) else None


def narrow_range(dtype: np.dtype) -> bool:
    """Whether a BatchNorm scale or a small weight can fall below the type's normal range, where fewer
    bits remain: float16's ends at 6.1e-5; float32's (1.2e-38) and float64's no network reaches."""
    return bool(np.finfo(dtype).tiny > 1e-20)
