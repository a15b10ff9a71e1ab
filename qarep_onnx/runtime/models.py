"""The two models of a validation, made ready for onnxruntime: a file each, what they take and give.

The original is written to the validation's workspace with its weights in an external data file
(which onnxruntime maps rather than copies: its three sessions cost less), and yields the copy with
every weight moved one ulp (the noise floor's second measure), made from a proto that is then
dropped: a model read from a file here is perturbed in place, a model the caller holds is copied.
The candidate runs from its own file when it has one, else from the workspace.  On the CPU, float16 and float64 models are run as
exact float32 copies (its provider has no float16 or float64 Conv).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..adapters import adapt
from ..errors import InputModelError, QarepError
from ..graph.tensors import FLOAT_TYPES
from .inputs import InputSpec, model_inputs
from .noise import (
    OneUlp,
    as_float32,
    main_graph_weights,
    model_float_type,
    moved_in_place,
    perturb_by_one_ulp,
)
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
    """The original's file in the workspace (its weights mapped by onnxruntime) and its perturbed copy.

    Nothing of ``model`` changes: the fold may call this first, then fold the same proto in place.
    """
    label = "the original model"
    proto, _, _ = _read(model, label)
    float_type = model_float_type(proto)
    widen = float_type != onnx.TensorProto.FLOAT and choice.name == "cpu"
    inputs, outputs = model_inputs(proto), model_outputs(proto)
    if widen:
        file = ws.model_file(as_float32(proto), "original", label, InputModelError, keep_model=False)
    else:
        file = ws.model_file(proto, "original", label, InputModelError)
    perturbed = _perturbed(proto, ws, widen, float_type, seed) if calibrate else None
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


def _perturbed(proto, ws: Workspace, widen: bool, float_type: int, seed: int) -> ModelFile | None:
    """The original with every finite weight moved one ulp, written to the workspace (None when it has no weight).

    One ulp of what the comparison really sees: float16 weights move by a float16 ulp (then widen),
    float64 weights, compared in float32 on the CPU, by a float32 ulp.  The main graph's weights are
    moved as they are written (no second copy of them in memory); the few elsewhere (Constant nodes,
    bodies, functions) are moved in place for the write and put back after it.
    """
    ulp = OneUlp(seed)
    name, label = "perturbed", "the perturbed original"
    if widen and float_type != onnx.TensorProto.FLOAT16:
        copy = as_float32(proto)
        return ws.model_file(copy, name, label, QarepError, keep_model=False) if perturb_by_one_ulp(copy, ulp) else None
    with moved_in_place(proto, ulp, main_initializers=widen) as changed:
        if widen:
            return ws.model_file(as_float32(proto), name, label, QarepError, keep_model=False) if changed else None
        weights = main_graph_weights(proto)
        if not changed and not any(t.name in weights and t.data_type in FLOAT_TYPES and math.prod(t.dims)
                                   for t in proto.graph.initializer):
            return None
        return ws.model_file(proto, name, label, QarepError,
                             transform=lambda tensor: ulp.raw(tensor) if tensor.name in weights else None)
