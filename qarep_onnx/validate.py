"""Check on onnxruntime that an optimized model computes what the original computed.

Both models run on the same seeded inputs with every graph optimization disabled (otherwise
onnxruntime folds Conv+BN inside the reference too and hides fold errors).  Each output is judged
by ``max|a - b| <= atol + rtol * max(1, max|a|)`` with tolerances by element type.
onnxruntime's CPU provider has no float16 or float64 Conv, so on the CPU such models are compared
through exact float32 copies of both graphs; on CUDA they run as they are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import InputModelError
from .providers import ProviderChoice, select_provider, session

# rtol by the model's float type: fp32 folds land near 1e-6; fp16 weights round once (about one
# ulp, 2**-11, per weight) and that rounding accumulates over a kernel's taps.  float64 models are
# compared through float32 copies on the CPU (see as_float32), so float32 arithmetic bounds them.
DEFAULT_RTOL = {onnx.TensorProto.FLOAT: 1e-5, onnx.TensorProto.FLOAT16: 1e-2, onnx.TensorProto.DOUBLE: 1e-5}

@dataclass(frozen=True)
class OutputComparison:
    name: str
    max_abs_error: float
    max_abs_reference: float
    tolerance: float  # the largest max_abs_error accepted

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_error <= self.tolerance)

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / max(1.0, self.max_abs_reference)


@dataclass(frozen=True)
class ValidationResult:
    outputs: tuple[OutputComparison, ...]
    provider: str  # "cpu", "cuda" or "tensorrt"
    provider_note: str  # one line: which provider and why
    rtol: float
    atol: float

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def worst(self) -> OutputComparison:
        return max(self.outputs, key=lambda o: o.max_abs_error / o.tolerance if o.tolerance else np.inf)


def model_float_type(model: onnx.ModelProto) -> int:
    """The float element type the model computes in (that of its first float input or initializer)."""
    for value in list(model.graph.input) + list(model.graph.output):
        t = value.type.tensor_type.elem_type
        if t in DEFAULT_RTOL:
            return t
    for init in model.graph.initializer:
        if init.data_type in DEFAULT_RTOL:
            return init.data_type
    return onnx.TensorProto.FLOAT


def as_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """An exact float32 copy of a float16/float64 model (every float tensor and type widened)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    wide = (onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)

    def convert_tensor(t: onnx.TensorProto) -> None:
        if t.data_type in wide:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))

    def convert_type(value_info) -> None:
        tt = value_info.type.tensor_type
        if tt.elem_type in wide:
            tt.elem_type = onnx.TensorProto.FLOAT

    def convert_graph(graph: onnx.GraphProto) -> None:
        for t in graph.initializer:
            convert_tensor(t)
        for v in list(graph.input) + list(graph.output) + list(graph.value_info):
            convert_type(v)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    convert_tensor(attr.t)
                elif attr.type == onnx.AttributeProto.GRAPH:
                    convert_graph(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        convert_graph(g)
                elif attr.name == "to" and node.op_type == "Cast" and attr.i in wide:
                    attr.i = onnx.TensorProto.FLOAT

    convert_graph(copy.graph)
    return copy


def make_inputs(
    model: onnx.ModelProto, seed: int = 0, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, np.ndarray]:
    """Seeded inputs for every graph input that is not an initializer."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tt = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else None
        if dtype is None or dtype.kind not in "fiub":
            raise InputModelError(
                f"input '{value.name}' has element type {onnx.TensorProto.DataType.Name(tt.elem_type)}, "
                "which validation cannot generate"
            )
        shape = (input_shapes or {}).get(value.name)
        if shape is None:
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            unknown = [d.dim_param or "?" for d in tt.shape.dim if not d.HasField("dim_value")]
            if unknown:
                raise InputModelError(
                    f"input '{value.name}' has symbolic dimensions {unknown}; "
                    f"give its shape, e.g. --input-shape {value.name}:1x3x224x224"
                )
            shape = tuple(dims)
        if dtype.kind == "f":
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        else:  # integers and bools: 0 or 1, valid as indices, flags and counts
            feeds[value.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


def run(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize_graph: bool = False, provider: ProviderChoice | None = None
) -> dict[str, np.ndarray]:
    """Outputs of ``model`` (CPU unless told; graph optimizations off unless asked)."""
    s = session(model, provider or select_provider("cpu"), optimize_graph)
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, feeds)))


def validate(
    original: onnx.ModelProto | str | os.PathLike,
    optimized: onnx.ModelProto | str | os.PathLike,
    *,
    provider: str = "auto",
    seed: int = 0,
    rtol: float | None = None,
    atol: float = 0.0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> ValidationResult:
    """Compare every output of ``optimized`` against ``original`` (models or paths) on the same seeded inputs.

    ``provider`` is ``auto`` (CUDA when it really works here, else the CPU), ``cpu``, ``cuda`` or
    ``tensorrt``; ``rtol`` defaults by element type (:data:`DEFAULT_RTOL`).
    """
    from .io import load_model

    original = original if isinstance(original, onnx.ModelProto) else load_model(original)
    optimized = optimized if isinstance(optimized, onnx.ModelProto) else load_model(optimized)
    choice = select_provider(provider)
    float_type = model_float_type(original)
    rtol = DEFAULT_RTOL.get(float_type, 1e-5) if rtol is None else rtol
    if float_type != onnx.TensorProto.FLOAT and choice.name == "cpu":
        original, optimized = as_float32(original), as_float32(optimized)
    feeds = make_inputs(original, seed, input_shapes)
    expected = run(original, feeds, provider=choice)
    actual = run(optimized, feeds, provider=choice)
    outputs = []
    for name, a in expected.items():
        error, reference = _max_error(np.asarray(a, np.float64), np.asarray(actual[name], np.float64))
        outputs.append(OutputComparison(name, error, reference, atol + rtol * max(1.0, reference)))
    return ValidationResult(tuple(outputs), choice.name, choice.note, rtol, atol)


def _max_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """max|a - b| and max|a| over finite values; equal infinities and NaN against NaN agree,
    any other non-finite mismatch is an infinite error."""
    if not a.size:
        return 0.0, 0.0
    with np.errstate(all="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        diff = np.where(same, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)
        finite = a[np.isfinite(a)]
        return float(diff.max()), float(np.abs(finite).max()) if finite.size else 0.0
