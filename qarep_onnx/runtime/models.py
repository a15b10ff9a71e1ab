"""The two models of a validation, made ready for onnxruntime: a file each, what they take and give.

A model given as a path is run from that path: onnxruntime reads it (and its external data) itself.
A model in memory is written to the validation's workspace with its weights in an external data
file.  The original also yields the copy with every weight moved one ulp (the noise floor's second
measure), made from a proto that is then dropped: a path's model is loaded once, perturbed in place
and written; a model in memory is copied for it.  On the CPU, float16 and float64 models are run as
exact float32 copies (its provider has no float16 or float64 Conv).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..adapters import adapt
from ..errors import InputModelError, QarepError
from .inputs import InputSpec, model_inputs
from .noise import as_float32, model_float_type, perturb_by_one_ulp
from .pairing import OutputSpec, model_outputs
from .providers import ProviderChoice
from .sessions import ModelFile, Workspace


@dataclass(frozen=True)
class Prepared:
    file: ModelFile
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    float_type: int
    widen: bool  # run as a float32 copy
    perturbed: ModelFile | None = None  # the original with every weight moved one ulp


def _read(model, label: str) -> tuple[onnx.ModelProto, Path | None, bool]:
    """The proto of ``model``, the path onnxruntime may read it from, and whether the proto is ours to change."""
    if isinstance(model, (str, os.PathLike)):
        loaded = adapt(model, label).loaded
        return loaded.model, loaded.path, True
    adapted = adapt(model, label)
    return adapted.loaded.model, None, adapted.owned


def prepare_original(model, ws: Workspace, choice: ProviderChoice, calibrate: bool, seed: int) -> Prepared:
    label = "the original model"
    proto, path, owned = _read(model, label)
    float_type = model_float_type(proto)
    widen = float_type != onnx.TensorProto.FLOAT and choice.name == "cpu"
    inputs, outputs = model_inputs(proto), model_outputs(proto)
    file = _file(proto, path, ws, "original", label, InputModelError, widen)
    perturbed = _perturbed(proto, owned, ws, widen, float_type, seed) if calibrate else None
    return Prepared(file, inputs, outputs, float_type, widen, perturbed)


def prepare_candidate(model, ws: Workspace, widen: bool, label: str, error: type[QarepError]) -> Prepared:
    proto, path, _ = _read(model, label)
    file = _file(proto, path, ws, "candidate", label, error, widen)
    return Prepared(file, model_inputs(proto), model_outputs(proto), model_float_type(proto), widen)


def _file(proto, path, ws: Workspace, name: str, label: str, error, widen: bool) -> ModelFile:
    if widen:
        return ws.model_file(as_float32(proto), name, label, error, keep_model=False)
    if path is not None:
        return ModelFile(Path(path), label, error)
    return ws.model_file(proto, name, label, error)


def _perturbed(proto, owned: bool, ws: Workspace, widen: bool, float_type: int, seed: int) -> ModelFile | None:
    """The original with every finite weight moved one ulp, written to the workspace (None when it has no weight).

    One ulp of what the comparison really sees: float16 weights move by a float16 ulp (then widen),
    float64 weights, compared in float32 on the CPU, by a float32 ulp.
    """
    if widen and float_type != onnx.TensorProto.FLOAT16:
        copy = as_float32(proto)
    elif owned:
        copy = proto  # loaded here for this: changed in place, no second copy
    else:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
    if not perturb_by_one_ulp(copy, seed):
        return None
    if widen and float_type == onnx.TensorProto.FLOAT16:
        copy = as_float32(copy)
    return ws.model_file(copy, "perturbed", "the perturbed original", QarepError, keep_model=False)
