"""Load models with errors a user can act on; save them atomically.

Saving writes to a temporary file in the destination folder and renames it over the target, so
an interrupted run never leaves a partial output and never touches the input.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from .errors import InputModelError, OutputPathError


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    p = Path(path)
    if not p.exists():
        raise InputModelError(f"{p}: no such file")
    if p.is_dir():
        raise InputModelError(f"{p}: is a directory, not an ONNX model file")
    if p.stat().st_size == 0:
        raise InputModelError(f"{p}: the file is empty")
    try:
        model = onnx.load(str(p))
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputModelError(f"{p}: not a readable ONNX model ({reason})") from exc
    check_is_model(model, str(p))
    return model


def check_is_model(model: onnx.ModelProto, label: str) -> None:
    if not isinstance(model, onnx.ModelProto):
        raise InputModelError(f"{label}: expected an onnx.ModelProto, got {type(model).__name__}")
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise InputModelError(f"{label}: not an ONNX model (no IR version or no graph)")
    if model.ir_version > onnx.IR_VERSION:
        raise InputModelError(
            f"{label}: IR version {model.ir_version} is newer than this onnx ({onnx.__version__}) supports "
            f"({onnx.IR_VERSION}); upgrade onnx"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise OutputPathError(f"{p}: the folder {folder} does not exist")
    if p.is_dir():
        raise OutputPathError(f"{p}: is a directory; give a file name for the output model")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"{p}: cannot write in {folder} ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
        os.replace(tmp, p)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OutputPathError(f"{p}: cannot write the model ({exc.strerror or exc})") from exc
        raise
