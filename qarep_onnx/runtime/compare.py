"""Compare one output of two models: the largest difference, the reference's scale, and what it proves.

Numbers (tensors, and sequences of tensors, concatenated) are compared element by element: equal
infinities and NaN against NaN agree, any other non-finite mismatch is an infinite error.  A noise
run measures a floor only where both it and the reference are finite: a -inf mask that a perturbed
weight turns into a large finite number must not make the floor, and with it the tolerance,
infinite.  Outputs that are not numbers (strings, maps) are compared for equality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_error: float
    max_abs_reference: float
    tolerance: float  # the largest max_abs_error accepted
    noise_floor: float | None = None  # the original model's own float noise on this output (None: not measured)
    empty: bool = False  # the output had no elements for any input set: it proves nothing
    sample: str = ""  # the input set where the error was largest, relative to its tolerance
    by_equality: bool = False  # not numbers (strings, maps): equal (error 0) or not (error inf)

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

    @property
    def badness(self) -> float:
        """The error over its tolerance (how far from failing); an empty output ranks below any other."""
        if self.empty:
            return -1.0
        return self.max_abs_error / self.tolerance if self.tolerance else (np.inf if self.max_abs_error else 0.0)


def as_numbers(value) -> np.ndarray | None:
    """An output as one float64 array (a tensor sequence concatenated), or None when it is not numbers."""
    if isinstance(value, list):
        arrays = [as_numbers(v) for v in value]
        if any(a is None for a in arrays):
            return None
        return np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0)
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return np.asarray(value, np.float64)
    return None


def same_shape(a, b) -> bool:
    """Two outputs laid out alike (a sequence of the same length, a tensor of the same shape)."""
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(same_shape, a, b))
    return np.shape(a) == np.shape(b)


def equal_values(a, b) -> bool:
    """Outputs that are not numbers (strings, maps, sequences of them), compared for equality."""
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(equal_values(a[k], b[k]) for k in a)
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(equal_values, a, b))
    return bool(np.shape(a) == np.shape(b) and np.array_equal(np.asarray(a, object), np.asarray(b, object)))


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


def floor_error(reference: np.ndarray, noisy: np.ndarray) -> float:
    """max|reference - noisy| where both are finite: how far noise moves an output, never widened by a non-finite value."""
    finite = np.isfinite(reference) & np.isfinite(noisy)
    if not finite.any():
        return 0.0
    with np.errstate(all="ignore"):
        return float(np.abs(reference[finite] - noisy[finite]).max())


def difference(expected, actual) -> tuple[float, float, int, bool]:
    """(max|a - b|, max|a|, elements, compared by equality) of two values of one output."""
    a, b = as_numbers(expected), as_numbers(actual)
    if a is None or b is None:
        equal = equal_values(expected, actual)
        return (0.0 if equal else np.inf), 0.0, int(np.size(expected)) if not isinstance(expected, dict) else len(expected), True
    if not same_shape(expected, actual) or a.shape != b.shape:
        return np.inf, max_abs(a), a.size, False
    error, reference = max_error(a, b)
    return error, reference, a.size, False
