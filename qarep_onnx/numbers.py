"""Figures the way strict JSON can hold them: a non-finite number is written as null, never as NaN or Infinity."""

from __future__ import annotations

import math


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float when it is finite, else None."""
    return float(x) if x is not None and math.isfinite(x) else None
