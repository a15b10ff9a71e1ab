"""Take a model the way an export pipeline holds it, and hand the result back in the same form.

The fold edits an ``onnx.ModelProto`` in place, so that every byte it does not fold stays as it
was.  Pipelines hold other things: a path, an ``onnx_graphsurgeon.Graph`` (TensorRT pipelines do
their surgery in it: NMS plugins, renamed inputs and outputs), or the ``ONNXProgram`` that
``torch.onnx.export(..., dynamo=True)`` returns.  A graphsurgeon graph is exported to a proto,
folded, and imported back, so the pipeline goes on with a graph; an ONNXProgram gives its
``model_proto``, and the folded proto comes back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import onnx

from .errors import InputModelError, first_line
from .io import LoadedModel, check_is_model, read_model

ModelLike = Any  # onnx.ModelProto | str | os.PathLike | onnx_graphsurgeon.Graph | torch.onnx.ONNXProgram


@dataclass(frozen=True)
class Adapted:
    """A model as the fold takes it: ``loaded`` (with its file's external data, if any), whether the fold
    may edit it in place (``owned``), and ``back``, which turns the folded proto into what was given."""

    loaded: LoadedModel
    owned: bool
    back: Callable[[onnx.ModelProto], Any]


def _same(model: onnx.ModelProto) -> onnx.ModelProto:
    return model


def is_graphsurgeon_graph(model: object) -> bool:
    # Checked by name, so that onnx_graphsurgeon is imported only when a pipeline hands us one of its graphs.
    return type(model).__module__.startswith("onnx_graphsurgeon") and type(model).__name__ == "Graph"


def adapt(model: ModelLike, label: str = "model") -> Adapted:
    """``model`` as a ModelProto for the fold, or :class:`~qarep_onnx.errors.InputModelError` saying what it takes."""
    if isinstance(model, onnx.ModelProto):
        check_is_model(model, label)
        return Adapted(LoadedModel(model, (), 0), False, _same)
    if isinstance(model, (str, os.PathLike)):
        return Adapted(read_model(model), True, _same)
    if is_graphsurgeon_graph(model):
        import onnx_graphsurgeon as gs

        try:
            proto = gs.export_onnx(model)
        except Exception as exc:  # graphsurgeon raises its own errors for graphs it cannot export
            raise InputModelError(f"{label}: onnx_graphsurgeon cannot export the graph ({first_line(exc)})") from exc
        check_is_model(proto, label)
        return Adapted(LoadedModel(proto, (), 0), True, gs.import_onnx)
    proto = getattr(model, "model_proto", None)  # torch.onnx.ONNXProgram
    if isinstance(proto, onnx.ModelProto):
        check_is_model(proto, label)
        return Adapted(LoadedModel(proto, (), 0), False, _same)
    raise InputModelError(
        f"{label}: expected an onnx.ModelProto, a path, an onnx_graphsurgeon.Graph or a torch.onnx.ONNXProgram, "
        f"got {type(model).__name__}"
    )
