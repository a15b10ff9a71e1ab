"""FP32 against INT8: per output SQNR (dB), cosine similarity and largest error.

Each output is judged over every input set of a measurement together (signal and noise powers
summed, vectors concatenated for the cosine), so one set with a small output does not dominate.  A
model's figure is its worst output's SQNR.  Non-float outputs (indices, masks) are compared as
numbers too; outputs that hold no numbers (a string label table, maps) have no SQNR and are left
out of the figures (:func:`non_numeric` names them, for the report to say so).  Non-finite FP32 values (a ``-inf`` mask, a ``log`` of zero) carry no power: they are
compared by position, counted, and a position where INT8 computed anything else makes the output's
SQNR ``-inf`` (never ``nan``).  An INT8 value that is not finite where FP32 is finite is infinite
noise.  The INT8 model runs on onnxruntime with every graph optimization off: the Q/DQ nodes execute
as written (quantize, round, clip, dequantize) in float32 around float kernels, so the figures are
the error of the scales, not of any int8 kernel.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx

from ..errors import UsageError
from ..runtime.inputs import InputSet
from ..runtime.compare import as_numbers
from ..runtime.providers import ProviderChoice
from .calibrate import run_model
from .report import Measurement, OutputQuality
from .sqnr import power_ratio_db


def _power(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The finite-reference positions of both, and (non-finite reference positions, of them where the candidate differs)."""
    bad = ~np.isfinite(reference)
    if not bad.any():
        return reference, candidate, 0, 0
    r, c = reference[bad], candidate[bad]
    same = (r == c) | (np.isnan(r) & np.isnan(c))
    return reference[~bad], candidate[~bad], int(bad.sum()), int((~same).sum())


def non_numeric(names: Sequence[str], references: Sequence[dict]) -> list[str]:
    """The outputs that hold no numbers in some reference set."""
    return [n for n in names if any(as_numbers(ref[n]) is None for ref in references)]


def _quality(name: str, references, candidates) -> OutputQuality | None:
    signal = noise = dot = cand_norm = 0.0
    worst = 0.0
    elements = nonfinite = mismatches = 0
    for ref, cand in zip(references, candidates):
        r, c = as_numbers(ref[name]), as_numbers(cand[name])
        if r is None or c is None:
            return None
        r, c = r.reshape(-1), c.reshape(-1)
        elements += r.size
        r, c, bad, differ = _power(r, c)
        nonfinite, mismatches = nonfinite + bad, mismatches + differ
        with np.errstate(invalid="ignore", over="ignore"):
            diff = r - c
            signal += float(r @ r)
            noise += float(diff @ diff) if np.isfinite(c).all() else math.inf
            dot += float(r @ c)
            cand_norm += float(c @ c)
        if diff.size:
            worst = max(worst, float(np.max(np.abs(diff))) if np.isfinite(diff).all() else math.inf)
    if not elements:
        return None
    if mismatches or not math.isfinite(noise):
        sqnr = -math.inf
    else:
        sqnr = power_ratio_db(signal, noise)
    if signal == 0 or cand_norm == 0 or not math.isfinite(cand_norm):
        cosine = (1.0 if signal == cand_norm else 0.0) if math.isfinite(cand_norm) else math.nan
    else:
        cosine = dot / math.sqrt(signal * cand_norm)
    return OutputQuality(name, sqnr, cosine, worst, nonfinite, mismatches)


def compare_outputs(
    names: Sequence[str], references: Sequence[dict[str, np.ndarray]], candidates: Sequence[dict[str, np.ndarray]]
) -> tuple[OutputQuality, ...]:
    """Per output, over all sets: SQNR in dB, cosine similarity and max |reference - candidate| (see above).

    An output with no elements in any set, or that holds no numbers, is left out; when every output
    is so there is no figure to give (:class:`UsageError`), rather than a vacuous +inf dB.
    """
    qualities = [q for q in (_quality(name, references, candidates) for name in names) if q is not None]
    if names and not qualities:
        raise UsageError("every output of the model is empty for the held-out inputs or holds no numbers: int8 cannot "
                         "be measured on them; give other inputs")
    return tuple(qualities)


def measure(
    model: onnx.ModelProto,
    input_sets: list[InputSet],
    output_names: list[str],
    references: list[dict[str, np.ndarray]],
    choice: ProviderChoice,
    excluded: Sequence[str] = (),
    label: str = "the INT8 model",
) -> Measurement:
    """Run ``model`` on ``input_sets`` and compare with the FP32 ``references`` of the same sets."""
    candidates = run_model(model, input_sets, choice, label)
    return Measurement(compare_outputs(output_names, references, candidates), tuple(excluded))
