"""Compare one output of two models: the largest difference, the reference's scale, and the tolerance.

Equal infinities and NaN against NaN agree; any other non-finite mismatch is an infinite error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .noise import FACTOR


@dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_error: float
    max_abs_reference: float
    tolerance: float  # the largest max_abs_error accepted
    noise_floor: float | None = None  # the original model's own float noise on this output (None: not measured)
    empty: bool = False  # the output had no elements for any input set: it proves nothing
    sample: str = ""  # the input set where the error was largest, relative to its tolerance

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_error <= self.tolerance)

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / max(1.0, self.max_abs_reference)

    @property
    def noise_multiple(self) -> float | None:
        """The error as a multiple of the model's own float noise."""
        if self.noise_floor is None:
            return None
        return self.max_abs_error / self.noise_floor if self.noise_floor > 0 else (0.0 if self.max_abs_error == 0 else np.inf)


def as_array(value) -> np.ndarray | None:
    """An output as one float64 array (a tensor sequence is concatenated), or None for maps."""
    if isinstance(value, list):
        if not all(isinstance(v, np.ndarray) for v in value):
            return None
        return np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in value]) if value else np.zeros(0)
    if isinstance(value, np.ndarray):
        return np.asarray(value, np.float64)
    return None


def sequence_length(value) -> int | None:
    return len(value) if isinstance(value, list) else None


def badness(o: OutputComparison) -> float:
    if o.empty:
        return -1.0
    return o.max_abs_error / o.tolerance if o.tolerance else (np.inf if o.max_abs_error else 0.0)


def compare_output(name, expected, actual, noisy, mode, rtol, fixed_rtol, atol, eps, sample) -> OutputComparison:
    a, b = as_array(expected), as_array(actual)
    if a is None or b is None:
        raise UsageError(f"output '{name}' is not a tensor or a sequence of tensors; it cannot be compared")
    if sequence_length(expected) != sequence_length(actual) or a.shape != b.shape:
        error, reference = np.inf, max_abs(a)
    else:
        error, reference = max_error(a, b)
    scale = max(1.0, reference)
    floor = None
    if mode == "explicit":
        tolerance = atol + rtol * scale
    elif mode == "fixed":
        tolerance = atol + fixed_rtol * scale
    else:
        # A noise run whose output changed shape measured something else than noise: left out.
        measured = [max_error(a, c)[0] for c in map(as_array, noisy) if c is not None and c.shape == a.shape]
        if measured:
            floor = max(max(measured), eps * scale)
            tolerance = atol + FACTOR * floor
        else:
            tolerance = atol + fixed_rtol * scale
    return OutputComparison(name, error, reference, tolerance, floor, a.size == 0, sample)


def max_abs(a: np.ndarray) -> float:
    finite = a[np.isfinite(a)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def max_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """max|a - b| and max|a| over finite values; equal infinities and NaN against NaN agree,
    any other non-finite mismatch is an infinite error."""
    if not a.size:
        return 0.0, 0.0
    with np.errstate(all="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        diff = np.where(same, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)
        return float(diff.max()), max_abs(a)


