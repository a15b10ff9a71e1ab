"""onnxruntime sessions and runs, with every failure turned into one line that names the model.

Models past protobuf's 2 GB limit go to onnxruntime through a temporary file with external data.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from ..errors import QarepError, first_line
from .providers import ProviderChoice, select_provider


def session(model: onnx.ModelProto | bytes, choice: ProviderChoice, optimize_graph: bool):
    """An InferenceSession on the chosen provider; ``optimize_graph=False`` disables every graph optimization.

    Models past protobuf's 2 GB limit go through a temporary file with external data.
    """
    import onnxruntime as ort

    from ..io import PROTOBUF_LIMIT, save_model

    options = ort.SessionOptions()
    options.log_severity_level = 4  # onnxruntime's own error lines would repeat, over several, what we say in one
    if not optimize_graph:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
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


def labelled_session(model, choice, label: str, error):
    """A session without graph optimizations; a model onnxruntime rejects is named in the error."""
    try:
        return session(model, choice, optimize_graph=False)
    except QarepError as exc:
        raise error(str(exc).replace("the model", label, 1)) from exc





def optional_session(model: onnx.ModelProto, choice: ProviderChoice, optimize_graph: bool):
    """A session for measuring the noise floor; None when onnxruntime cannot build it (then that measure is skipped)."""
    try:
        return session(model, choice, optimize_graph)
    except QarepError:
        return None
