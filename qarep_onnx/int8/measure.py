"""FP32 against INT8 on the held-out sets: per output SQNR (dB), cosine similarity and largest error.

Each output is judged over every held-out set together (signal and noise powers summed, vectors
concatenated for the cosine), so one set with a small output does not dominate.  A model's figure is
its worst output's SQNR.  Non-float outputs (indices, masks) are compared as numbers too.  The INT8
model runs on onnxruntime with every graph optimization off: the Q/DQ nodes execute as written
(quantize, round, clip, dequantize) in float32 around float kernels, so the figures are the error of
the scales, not of any int8 kernel.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx

from ..errors import UsageError
from ..runtime.inputs import InputSet
from ..runtime.providers import ProviderChoice
from .calibrate import FloatRuns, run_model
from .report import Measurement, OutputQuality
from .sqnr import power_ratio_db


def compare_outputs(
    names: Sequence[str], references: Sequence[dict[str, np.ndarray]], candidates: Sequence[dict[str, np.ndarray]]
) -> tuple[OutputQuality, ...]:
    """Per output, over all sets: SQNR in dB, cosine similarity and max |reference - candidate|.

    An output with no elements in any set measured nothing and is left out; when every output is
    empty there is no figure to give (:class:`UsageError`), rather than a vacuous +inf dB.
    """
    qualities = []
    for name in names:
        signal = noise = dot = ref_norm = cand_norm = 0.0
        worst = 0.0
        elements = 0
        for ref, cand in zip(references, candidates):
            r = np.asarray(ref[name], dtype=np.float64).reshape(-1)
            c = np.asarray(cand[name], dtype=np.float64).reshape(-1)
            elements += r.size
            diff = r - c
            signal += float(r @ r)
            noise += float(diff @ diff)
            dot += float(r @ c)
            ref_norm += float(r @ r)
            cand_norm += float(c @ c)
            if diff.size:
                worst = max(worst, float(np.max(np.abs(diff))))
        if not elements:
            continue
        if ref_norm == 0 or cand_norm == 0:
            cosine = 1.0 if ref_norm == cand_norm else 0.0
        else:
            cosine = dot / math.sqrt(ref_norm * cand_norm)
        qualities.append(OutputQuality(name, power_ratio_db(signal, noise), cosine, worst))
    if names and not qualities:
        raise UsageError("every output of the model is empty for the held-out inputs: int8 cannot be measured on them; "
                         "give other inputs")
    return tuple(qualities)


def measure(
    qdq_model: onnx.ModelProto,
    holdout: list[InputSet],
    runs: FloatRuns,
    choice: ProviderChoice,
    excluded: Sequence[str] = (),
    label: str = "the INT8 model",
) -> Measurement:
    """Run ``qdq_model`` on the held-out sets and compare with the FP32 references of ``runs``."""
    candidates = run_model(qdq_model, holdout, choice, label)
    return Measurement(compare_outputs(runs.output_names, runs.references, candidates), tuple(excluded))
