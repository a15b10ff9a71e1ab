"""Float32 runs: activation ranges from the calibration sets, references from the held-out sets.

One session of the float model, with every layer input added as an output, runs once per input
set.  On the calibration sets it records each layer input's minimum and maximum (max calibration:
the symmetric scale is ``max(|min|, |max|) / 127``, what onnxruntime's MinMax calibrator with
``ActivationSymmetric`` gives).  On the held-out sets it keeps the model's outputs (the FP32
reference every Q/DQ candidate is measured against) and each layer input's SQNR under its
calibrated per-tensor scale, clipping included.  Sessions run with every graph optimization off.
Nothing here is recomputed per candidate: the sensitivity analysis reuses these ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from ..errors import QarepError
from ..runtime.inputs import InputSet
from ..runtime.providers import ProviderChoice
from ..runtime.sessions import session
from .report import ActivationRange
from .sqnr import fake_quantize, power_ratio_db, symmetric_scale


@dataclass
class FloatRuns:
    ranges: dict[str, ActivationRange]
    output_names: list[str]
    references: list[dict[str, np.ndarray]]  # per held-out set: output name -> FP32 values
    activation_sqnr_db: dict[str, float]  # layer input -> SQNR on the held-out sets


def run_model(model: onnx.ModelProto, input_sets: list[InputSet], choice: ProviderChoice, label: str) -> list[dict[str, np.ndarray]]:
    """Every output of ``model`` for each input set (graph optimizations off)."""
    s = session(model, choice, optimize_graph=False)
    names = [o.name for o in s.get_outputs()]
    results = []
    for input_set in input_sets:
        try:
            values = s.run(names, input_set.feeds)
        except Exception as exc:  # onnxruntime raises its own types
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise QarepError(f"onnxruntime failed to run {label} on {input_set.description}: {detail}") from exc
        results.append(dict(zip(names, values)))
    return results


def _with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy whose graph also outputs ``tensors`` (those not already outputs or inputs)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output} | {i.name for i in copy.graph.input}
    typed = {v.name: v for v in copy.graph.value_info}
    for name in tensors:
        if name in present:
            continue
        info = typed.get(name) or helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        copy.graph.output.append(info)
        present.add(name)
    return copy


def float_runs(
    prepared: onnx.ModelProto,
    tensors: list[str],
    calibration: list[InputSet],
    holdout: list[InputSet],
    choice: ProviderChoice,
) -> FloatRuns:
    """Ranges of ``tensors`` over ``calibration``; references and activation SQNR over ``holdout``."""
    output_names = [o.name for o in prepared.graph.output]
    augmented = _with_outputs(prepared, tensors)
    low = {t: math.inf for t in tensors}
    high = {t: -math.inf for t in tensors}
    for input_set, values in zip(calibration, run_model(augmented, calibration, choice, "the float model")):
        for t in tensors:
            x = values[t] if t in values else input_set.feeds[t]
            if x.size:
                low[t] = min(low[t], float(np.min(x)))
                high[t] = max(high[t], float(np.max(x)))
    ranges = {t: ActivationRange(t, low[t] if low[t] <= high[t] else 0.0, high[t] if low[t] <= high[t] else 0.0) for t in tensors}
    signal = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    references = []
    for input_set, values in zip(holdout, run_model(augmented, holdout, choice, "the float model")):
        references.append({name: values[name] for name in output_names})
        for t in tensors:
            x = np.asarray(values[t] if t in values else input_set.feeds[t], dtype=np.float64)
            q = fake_quantize(x, symmetric_scale(ranges[t].absmax))
            signal[t] += float(np.sum(x**2))
            noise[t] += float(np.sum((x - q) ** 2))
    activation = {t: power_ratio_db(signal[t], noise[t]) for t in tensors}
    return FloatRuns(ranges, output_names, references, activation)
