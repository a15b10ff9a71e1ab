"""The two models of a validation, made ready for onnxruntime: a file each, what they take and give.

The original runs with its weights in external data files, which onnxruntime maps rather than
copies (its three sessions cost less): from the file it was read from when that has them, else
from a copy written to the validation's workspace.  It yields the copy with every weight moved one
ulp (the noise floor's second measure), written as the weights are moved.  The candidate runs from
its own file when it has one, else from the workspace.  On the CPU, float16 and float64 models are
run as exact float32 copies (its provider has no float16 or float64 Conv).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..adapters import adapt
from ..errors import InputModelError, QarepError
from ..graph.tensors import FLOAT_TYPES
from ..io import initializer_values
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
    """The proto of ``model``, the path onnxruntime may read it from, and whether its weights are in
    external data files there."""
    loaded = adapt(model, label).loaded
    path = loaded.path if isinstance(model, (str, os.PathLike)) else None
    return loaded.model, path, loaded.external_data


def prepare_original(model, ws: Workspace, choice: ProviderChoice, calibrate: bool, seed: int,
                     external_file: Path | None = None) -> Prepared:
    """The original's file and its perturbed copy.  Nothing of ``model`` changes: the fold may call this
    first, then fold the same proto in place.

    Three sessions read the original, so its weights should be in external data that onnxruntime maps:
    a file read with them (``external_file``, or the path given) serves as it is; any other model is
    written to the workspace so.
    """
    label = "the original model"
    proto, read_from, external = _read(model, label)
    float_type = model_float_type(proto)
    widen = float_type != onnx.TensorProto.FLOAT and choice.name == "cpu"
    inputs, outputs = model_inputs(proto), model_outputs(proto)
    file = _file(proto, external_file or (read_from if external else None), ws, "original", label, InputModelError, widen)
    perturbed = _perturbed(proto, file, ws, widen, float_type, seed) if calibrate else None
    return Prepared(file, inputs, outputs, float_type, widen, perturbed)


def prepare_candidate(model, ws: Workspace, widen: bool, label: str, error: type[QarepError]) -> Prepared:
    proto, path, _ = _read(model, label)  # one session: its own file serves, whatever holds its weights
    file = _file(proto, path, ws, "candidate", label, error, widen)
    return Prepared(file, model_inputs(proto), model_outputs(proto), model_float_type(proto), widen)


def _file(proto, path, ws: Workspace, name: str, label: str, error, widen: bool) -> ModelFile:
    if widen:
        return ws.model_file(as_float32(proto), name, label, error, keep_model=False)
    if path is not None:
        return ModelFile(Path(path), label, error)
    return ws.model_file(proto, name, label, error)


def _perturbed(proto, original: ModelFile, ws: Workspace, widen: bool, float_type: int, seed: int) -> ModelFile | None:
    """The original with every finite weight moved one ulp (None when it has no weight).

    One ulp of what the comparison really sees: float16 weights move by a float16 ulp (then widen),
    float64 weights, compared in float32 on the CPU, by a float32 ulp.  When only the main graph's
    initializers hold weights, the original's file serves, its weights moved as the session opens
    (onnxruntime takes them in place of the file's); otherwise the copy is written to the workspace,
    the main graph's weights moved as they are written and the few elsewhere (Constant nodes, bodies,
    functions) moved in place for the write and put back after it.
    """
    ulp = OneUlp(seed)
    name, label = "perturbed", "the perturbed original"
    if widen and float_type != onnx.TensorProto.FLOAT16:
        copy = as_float32(proto)
        return ws.model_file(copy, name, label, QarepError, keep_model=False) if perturb_by_one_ulp(copy, ulp) else None
    with moved_in_place(proto, ulp, main_initializers=widen) as changed:
        if widen:
            return ws.model_file(as_float32(proto), name, label, QarepError, keep_model=False) if changed else None
        read_as_weights = main_graph_weights(proto)
        weights = {t.name for t in proto.graph.initializer
                   if t.name in read_as_weights and t.data_type in FLOAT_TYPES and math.prod(t.dims)}
        if not changed and not weights:
            return None
        if not changed and not weights & {i.name for i in proto.graph.input}:
            return ModelFile(original.path, label, QarepError, overrides=functools.partial(_moved, original.path, weights, seed))
        return ws.model_file(proto, name, label, QarepError,
                             transform=lambda tensor: ulp.raw(tensor) if tensor.name in weights else None)


def _moved(path: Path, names: set[str], seed: int) -> dict[str, np.ndarray]:
    """The initializers ``names`` of the model file at ``path``, each moved one ulp (read where they lie)."""
    ulp = OneUlp(seed)
    return {tensor.name: ulp.moved_values(values) for tensor, values in initializer_values(path, names)}
