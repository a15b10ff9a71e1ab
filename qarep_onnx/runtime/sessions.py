"""onnxruntime sessions and runs, with every failure turned into one line that names the model.

A validation runs several sessions over the same inputs; they are opened one at a time from model
files, never from a second in-memory copy of the model: a model given as a path is loaded by
onnxruntime itself (its external data read in place), and a model in memory is first written to a
:class:`Workspace` with its weights in an external data file, which onnxruntime maps rather than
copies.  The workspace also keeps each input set's reference outputs on disk, so that memory does
not grow with the number of input sets.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from ..errors import QarepError, first_line
from .providers import ProviderChoice, select_provider


def _options(optimize_graph: bool, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # onnxruntime's own error lines would repeat, over several, what we say in one
    if not optimize_graph:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def session(model: onnx.ModelProto | bytes, choice: ProviderChoice, optimize_graph: bool):
    """An InferenceSession of a model in memory; ``optimize_graph=False`` disables every graph optimization.

    Models past protobuf's 2 GB limit go through a temporary file with external data.
    """
    import onnxruntime as ort

    from ..save import PROTOBUF_LIMIT, save_model

    options = _options(optimize_graph)
    try:
        if isinstance(model, onnx.ModelProto) and model.ByteSize() > PROTOBUF_LIMIT:
            with tempfile.TemporaryDirectory(prefix="qarep-onnx-") as folder:
                path = Path(folder) / "model.onnx"
                save_model(model, path, external_data=True)
                return ort.InferenceSession(str(path), options, providers=choice.session_providers)
        data = model if isinstance(model, bytes) else model.SerializeToString()
        return ort.InferenceSession(data, options, providers=choice.session_providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise QarepError(f"onnxruntime cannot load the model: {first_line(exc)}") from exc


@dataclass(frozen=True)
class ModelFile:
    """A model file onnxruntime loads itself; ``label`` names it in errors, which are ``error``.

    ``overrides``, when given, makes the initializers to use instead of the file's, by name, when a
    session opens (a model that differs from a file only in its weights needs no file of its own).
    """

    path: Path
    label: str = "the model"
    error: type[QarepError] = QarepError
    overrides: Callable[[], dict[str, np.ndarray]] | None = None


def open_session(model: ModelFile, choice: ProviderChoice, optimize_graph: bool = False, profile_prefix: str | None = None):
    """A session of ``model`` on the chosen provider (graph optimizations off unless asked; profiled when told where)."""
    import onnxruntime as ort

    options = _options(optimize_graph, profile_prefix)
    # onnxruntime reads these buffers in place for the session's life: the session keeps them.
    overrides = model.overrides() if model.overrides is not None else {}
    kept = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for name, v in overrides.items()}
    for name, value in kept.items():
        options.add_initializer(name, value)
    try:
        s = ort.InferenceSession(str(model.path), options, providers=choice.session_providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise model.error(f"onnxruntime cannot load {model.label}: {first_line(exc)}") from exc
    s.qarep_onnx_initializers = kept
    return s


def run(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize_graph: bool = False, provider: ProviderChoice | None = None
) -> dict[str, np.ndarray]:
    """Outputs of ``model`` (CPU unless told; graph optimizations off unless asked)."""
    s = session(model, provider or select_provider("cpu"), optimize_graph)
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, run_session(s, names, feeds)))


def run_session(s, names: list[str], feeds: dict[str, np.ndarray], label: str = "the model", error=QarepError) -> list:
    try:
        return s.run(names, feeds)
    except Exception as exc:  # onnxruntime raises its own types
        raise error(f"onnxruntime failed to run {label}: {first_line(exc)}") from exc


@functools.cache
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: memory goes back to the system on its allocator's own terms
        return None


def release_memory() -> None:
    """Hand memory freed by a closed session back to the system before the next one opens.

    glibc keeps freed heap for reuse; without this, each session's peak would stack on what the one
    before it left, and a validation would need the memory of all its sessions at once.
    """
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class Workspace(contextlib.AbstractContextManager):
    """A temporary folder for one validation: model files for onnxruntime, and spilled outputs."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="qarep-onnx-validate-")
        self.path = Path(self._folder.name)

    def __exit__(self, *exc) -> None:
        self._folder.cleanup()

    def model_file(self, model: onnx.ModelProto, name: str, label: str, error: type[QarepError] = QarepError,
                   keep_model: bool = True, transform=None) -> ModelFile:
        """``model`` written here, its weights in an external data file (``transform``: see
        :func:`~qarep_onnx.save.save_model`); ``keep_model=False`` when the caller drops the model."""
        from ..save import save_model

        path = self.path / f"{name}.onnx"
        save_model(model, path, external_data=True, keep_model=keep_model, transform=transform)
        return ModelFile(path, label, error)

    def put(self, key: str, outputs: dict) -> None:
        """Keep ``outputs`` (arrays, sequences, maps) on disk under ``key``."""
        with open(self.path / f"{key}.pickle", "wb") as f:
            pickle.dump(outputs, f, protocol=pickle.HIGHEST_PROTOCOL)

    def get(self, key: str) -> dict:
        with open(self.path / f"{key}.pickle", "rb") as f:
            return pickle.load(f)  # written by put() above, in this process's own temporary folder
