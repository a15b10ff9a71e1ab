"""Save models atomically, with external data when needed, without touching the model or the input.

Saving writes to temporary files in the destination folder and renames them over the targets
(the external data first, then the model that points to it), so an interrupted run never leaves
a partial output and never touches the input.  Large weights go to an external data file when
the input had one, when the model would pass protobuf's 2 GB limit, or when asked.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import onnx

from .errors import OutputPathError
from .graph.walk import scopes
from .paths import OutputPath, check_outputs, resolve_output

PROTOBUF_LIMIT = 2**31 - 1
# Tensors smaller than this stay inside the model file when weights go external.
EXTERNAL_THRESHOLD = 1024


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary(folder: Path, name: str, label: Path) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputPathError(f"{label}: cannot write in {folder} ({exc.strerror or exc})") from exc


def _externalize(model: onnx.ModelProto, data_file, location: str, streamed: bool, transform=None):
    """Write large raw tensors to ``data_file``, one at a time.

    The main graph's initializers are left untouched when the model is ``streamed``: each gets a stub
    (its fields without the data, pointing into the data file) that the writer puts in its place.
    Other tensors (in bodies, or all of them for a model written whole) are moved out and recorded as
    (tensor, offset, length, had data_location), to put them back afterwards.  ``transform(tensor)``
    gives new raw bytes for a main-graph initializer (None: as it is).
    """
    stubs: dict[int, onnx.TensorProto] = {}
    moved = []
    offset = 0
    if not streamed and transform is not None:
        for tensor in model.graph.initializer:
            _replace_data(tensor, transform(tensor))
    main = [] if not streamed else list(model.graph.initializer)
    for k, tensor in enumerate(main):
        new = transform(tensor) if transform is not None else None
        data = new if new is not None else (tensor.raw_data if tensor.HasField("raw_data") else b"")  # read once
        if len(data) >= EXTERNAL_THRESHOLD:
            offset = _append(data_file, data, offset)
            stubs[k] = _external(_shell(tensor, lambda n: n not in _DATA_FIELDS), location, offset - len(data), len(data))
        elif new is not None:
            stubs[k] = _shell(tensor, lambda n: n not in _DATA_FIELDS)
            stubs[k].raw_data = new
    for scope in scopes(model):
        if streamed and scope.graph is model.graph:
            continue
        for tensor in scope.initializers:
            data = tensor.raw_data if tensor.HasField("raw_data") else b""
            if len(data) < EXTERNAL_THRESHOLD:
                continue
            offset = _append(data_file, data, offset)
            moved.append((tensor, offset - len(data), len(data), tensor.HasField("data_location")))
            tensor.ClearField("raw_data")
            _external(tensor, location, offset - len(data), len(data))
    return stubs, moved


def _replace_data(tensor: onnx.TensorProto, data: bytes | None) -> None:
    if data is not None:
        for name in _DATA_FIELD_NAMES:
            tensor.ClearField(name)
        tensor.raw_data = data


def _append(data_file, data: bytes, offset: int) -> int:
    """Write ``data`` page-aligned (so readers can map it) at ``offset`` or after; returns the offset after it."""
    padding = -offset % 4096
    data_file.write(b"\0" * padding)
    data_file.write(data)
    return offset + padding + len(data)


def _external(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> onnx.TensorProto:
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _restore(moved: list[tuple[onnx.TensorProto, int, int, bool]], data_path: str | None) -> None:
    """Put moved tensors back in memory, reading them back from the data file just written."""
    with open(data_path, "rb") if (moved and data_path) else contextlib.nullcontext() as f:
        for tensor, offset, length, had_location in moved:
            del tensor.external_data[:]
            if had_location:
                tensor.data_location = onnx.TensorProto.DEFAULT
            else:
                tensor.ClearField("data_location")
            if f is not None:
                f.seek(offset)
                tensor.raw_data = f.read(length)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _shell(message, keep):
    """A new message of the same type holding the fields of ``message`` whose number ``keep`` accepts."""
    shell = type(message)()
    for field, value in message.ListFields():
        if not keep(field.number):
            continue
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if repeated:
            getattr(shell, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(shell, field.name).CopyFrom(value)
        else:
            setattr(shell, field.name, value)
    return shell


_GRAPH_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INITIALIZER_FIELD = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
_DATA_FIELD_NAMES = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
_DATA_FIELDS = {onnx.TensorProto.DESCRIPTOR.fields_by_name[name].number for name in _DATA_FIELD_NAMES}


class _Serialized:
    """``model.SerializeToString()``, sized first and then written one initializer at a time.

    Serializing a large model at once builds one buffer as large as the file; writing the same
    fields in the same order (by field number) piece by piece needs no more than the largest
    initializer.  A message with unknown fields is serialized whole, to keep those fields.
    """

    @staticmethod
    def streamable(model: onnx.ModelProto) -> bool:
        """Whether the model can be written piece by piece (no unknown fields to keep)."""
        from google.protobuf.unknown_fields import UnknownFieldSet

        return model.HasField("graph") and not len(UnknownFieldSet(model)) and not len(UnknownFieldSet(model.graph))

    def __init__(self, model: onnx.ModelProto, stubs: dict[int, onnx.TensorProto] | None = None) -> None:
        self.model = model
        self.stubs = stubs or {}
        graph = model.graph
        self.whole = None
        if not self.streamable(model):
            try:
                self.whole = model.SerializeToString()
            except ValueError as exc:  # protobuf refuses messages over 2 GB
                raise _TooLarge(str(exc)) from exc
            self.size = len(self.whole)
            return
        self.head = _shell(model, lambda n: n < _GRAPH_FIELD)
        self.tail = _shell(model, lambda n: n > _GRAPH_FIELD)
        self.graph_head = _shell(graph, lambda n: n < _INITIALIZER_FIELD)
        self.graph_tail = _shell(graph, lambda n: n > _INITIALIZER_FIELD)
        self.tag = _varint(_INITIALIZER_FIELD << 3 | 2)
        self.sizes = [self.stubs.get(k, t).ByteSize() for k, t in enumerate(graph.initializer)]
        self.graph_size = (
            self.graph_head.ByteSize()
            + self.graph_tail.ByteSize()
            + sum(len(self.tag) + len(_varint(n)) + n for n in self.sizes)
        )
        self.graph_key = _varint(_GRAPH_FIELD << 3 | 2) + _varint(self.graph_size)
        self.size = self.head.ByteSize() + len(self.graph_key) + self.graph_size + self.tail.ByteSize()

    def write(self, f) -> None:
        if self.whole is not None:
            f.write(self.whole)
            return
        f.write(self.head.SerializeToString())
        f.write(self.graph_key)
        f.write(self.graph_head.SerializeToString())
        for k, (tensor, size) in enumerate(zip(self.model.graph.initializer, self.sizes)):
            f.write(self.tag + _varint(size))
            f.write(self.stubs.get(k, tensor).SerializeToString())
        f.write(self.graph_tail.SerializeToString())
        f.write(self.tail.SerializeToString())


class _TooLarge(Exception):
    pass


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    external_data: bool | str | None = None,
    keep_model: bool = True,
    protected: Sequence[tuple[str, Path]] = (),
    transform: Callable[[onnx.TensorProto], bytes | None] | None = None,
) -> Path | None:
    """Write ``model`` to ``path`` atomically; returns the external data file written, if any.

    ``external_data``: ``None`` writes one file unless the model passes 2 GB; ``True`` writes weights
    to ``<OUT name>.data`` beside OUT; a string names that file (relative to OUT's folder).  The
    main graph's weights are written from where they are, without touching the model; weights in
    bodies and functions are moved out while writing and, unless ``keep_model=False`` (a caller that
    drops the model), read back.  With external data, ``transform(tensor)`` may give new raw bytes for a
    main-graph initializer, written instead of its own.  ``protected`` are (role, path) pairs no file written may replace
    (the input model and its data files).  A symbolic link at ``path`` is written through: its
    target gets the model.
    """
    out = resolve_output(path, "the output model")
    p, folder = out.target, out.target.parent
    check_outputs([out], list(protected))
    if external_data is None:
        try:
            return _write(model, p, folder, None, keep_model)
        except _TooLarge:
            external_data = True  # past protobuf's 2 GB limit: weights must go to a data file
    location = external_data_location(out, external_data)
    data = resolve_output(folder / location, "the external data file", make_folders=True)
    check_outputs([out, data], list(protected))
    try:
        return _write(model, p, folder, location, keep_model, transform)
    except _TooLarge as exc:
        raise OutputPathError(f"{p}: the model is too large to write even with external data ({exc})") from exc


def external_data_location(out: OutputPath, external_data: bool | str) -> str:
    """The external data file's location (relative to the model's folder) for ``--external-data``."""
    if out.note is not None:
        raise OutputPathError(
            f"{out.path} is a symbolic link, and external data is located relative to the path a model is read "
            "from; give the real path of the output"
        )
    location = f"{out.target.name}.data" if external_data is True else str(external_data)
    folder = out.target.parent
    if not location or "\0" in location or Path(location).is_absolute() or folder.resolve() not in (folder / location).resolve().parents:
        raise OutputPathError(f"{location!r}: the external data file must be a file inside the output folder {folder}")
    return location


def write_text(path: str | os.PathLike, text: str, role: str = "the report") -> None:
    """Write ``text`` atomically (a temporary file renamed over the target; symbolic links followed)."""
    target = resolve_output(path, role).target
    fd, tmp = _temporary(target.parent, target.name, target)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot write {role} ({exc.strerror or exc})") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write(model: onnx.ModelProto, p: Path, folder: Path, location: str | None, keep_model: bool,
           transform=None) -> Path | None:
    data_path = (folder / location).resolve() if location is not None else None
    temporaries = []
    try:
        stubs, moved = {}, []
        if data_path is not None:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            data_fd, data_tmp = _temporary(data_path.parent, data_path.name, p)
            temporaries.append(data_tmp)
            with os.fdopen(data_fd, "wb") as f:
                stubs, moved = _externalize(model, f, location, _Serialized.streamable(model), transform)
        try:
            serialized = _Serialized(model, stubs)
            if serialized.size > PROTOBUF_LIMIT:
                raise _TooLarge(f"{serialized.size} bytes, over protobuf's 2 GB limit")
            model_fd, model_tmp = _temporary(folder, p.name, p)
            temporaries.append(model_tmp)
            with os.fdopen(model_fd, "wb") as f:
                serialized.write(f)
        finally:
            _restore(moved, temporaries[0] if keep_model and moved else None)
        mode = 0o666 & ~_umask()  # mkstemp makes files private; give them the usual mode
        for tmp in temporaries:
            os.chmod(tmp, mode)
        if data_path is not None:
            os.replace(temporaries[0], data_path)
        os.replace(model_tmp, p)
        temporaries.clear()
    except OSError as exc:
        raise OutputPathError(f"{p}: cannot write the model ({exc.strerror or exc})") from exc
    finally:
        for tmp in temporaries:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return data_path
