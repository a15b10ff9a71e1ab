"""Load models with errors a user can act on, and read a model file's weights where they lie.

Writing them is :mod:`.save`'s.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from .errors import InputModelError
from .graph.tensors import FLOAT_TYPES, tensor_values
from .graph.walk import model_tensors


@dataclass(frozen=True)
class LoadedModel:
    model: onnx.ModelProto
    data_files: tuple[Path, ...]  # external data files the weights came from
    size_bytes: int  # model file plus external data
    path: Path | None = None  # the file it was read from

    @property
    def external_data(self) -> bool:
        return bool(self.data_files)


def _external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def _external_int(info: dict[str, str], key: str, tensor: onnx.TensorProto, label: str) -> int | None:
    value = info.get(key)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise InputModelError(f"{label}: tensor '{tensor.name}' has external data {key} {value!r}; it must be a whole number >= 0")
    return number


def _load_external_data(model: onnx.ModelProto, folder: Path, label: str) -> tuple[tuple[Path, ...], int]:
    """Read every external tensor into memory, refusing locations outside ``folder``.

    Returns the data files read and the number of bytes.
    """
    total = 0
    handles: dict[Path, object] = {}
    root = folder.resolve()
    try:
        for tensor in model_tensors(model):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            info = _external_info(tensor)
            location = info.get("location", "")
            if "\0" in location:
                raise InputModelError(f"{label}: external data location of tensor '{tensor.name}' contains a NUL byte")
            path = (folder / location).resolve()
            if not location or Path(location).is_absolute() or root not in path.parents:
                raise InputModelError(
                    f"{label}: external data location '{location}' of tensor '{tensor.name}' is outside the "
                    f"model's folder {folder}; keep the data file beside the model"
                )
            if not path.is_file():
                raise InputModelError(
                    f"{label}: external data file '{location}' of tensor '{tensor.name}' is missing from {folder}"
                )
            offset = _external_int(info, "offset", tensor, label) or 0
            length = _external_int(info, "length", tensor, label)
            if path not in handles:
                handles[path] = open(path, "rb")
            f = handles[path]
            f.seek(offset)
            data = f.read() if length is None else f.read(length)
            if length is not None and len(data) != length:
                raise InputModelError(f"{label}: external data file '{location}' is shorter than tensor '{tensor.name}' needs")
            tensor.raw_data = data
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
            total += len(data)
    except OSError as exc:
        raise InputModelError(f"{label}: cannot read its external data ({exc.strerror or exc})") from exc
    finally:
        for f in handles.values():
            f.close()
    return tuple(handles), total


def read_model(path: str | os.PathLike) -> LoadedModel:
    """Load a model and its external data, or raise :class:`InputModelError` saying what is wrong."""
    p = Path(path)
    if "\0" in str(p):
        raise InputModelError(f"{str(p)!r}: a path cannot contain a NUL byte")
    if not p.exists():
        raise InputModelError(f"{p}: no such file")
    if p.is_dir():
        raise InputModelError(f"{p}: is a directory, not an ONNX model file")
    size = p.stat().st_size
    if size == 0:
        raise InputModelError(f"{p}: the file is empty")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputModelError(f"{p}: not a readable ONNX model ({reason})") from exc
    except OSError as exc:
        raise InputModelError(f"{p}: cannot read the file ({exc.strerror or exc})") from exc
    check_is_model(model, str(p))
    data_files, external = _load_external_data(model, p.parent, str(p))
    return LoadedModel(model, data_files, size + external, p)


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    return read_model(path).model


def check_is_model(model: onnx.ModelProto, label: str) -> None:
    if not isinstance(model, onnx.ModelProto):
        raise InputModelError(f"{label}: expected an onnx.ModelProto, got {type(model).__name__}")
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise InputModelError(f"{label}: not an ONNX model (no IR version, graph or opset import)")
    if model.ir_version > onnx.IR_VERSION:
        raise InputModelError(
            f"{label}: IR version {model.ir_version} is newer than this onnx ({onnx.__version__}) supports "
            f"({onnx.IR_VERSION}); upgrade onnx"
        )


def initializer_values(path: Path, names: set[str]) -> Iterator[tuple[onnx.TensorProto, np.ndarray]]:
    """The main graph's float initializers ``names`` of a model file we wrote or read, with their values,
    one at a time: those in external data files read from there (never the whole file at once)."""
    model = onnx.load(str(path), load_external_data=False)
    with contextlib.ExitStack() as files:
        handles: dict[Path, object] = {}
        for tensor in model.graph.initializer:
            if tensor.name not in names:
                continue
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                yield tensor, tensor_values(tensor)
                continue
            info = _external_info(tensor)
            data = path.parent / info["location"]
            if data not in handles:
                handles[data] = files.enter_context(open(data, "rb"))
            handles[data].seek(_external_int(info, "offset", tensor, str(path)) or 0)
            dtype = np.dtype(FLOAT_TYPES[tensor.data_type]).newbyteorder("<")
            values = np.fromfile(handles[data], dtype, math.prod(tensor.dims))
            yield tensor, values.reshape(tuple(tensor.dims))
