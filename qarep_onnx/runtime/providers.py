"""Pick an onnxruntime execution provider that really works here, and say which in one line.

``onnxruntime-gpu`` lists CUDA and TensorRT as available even where their libraries are missing;
creating a session then logs a multi-line error and silently falls back to the CPU.  So a provider
counts as usable only when a probe session really runs on it, and the probe's own noise (C++ log
lines, the Python "EP Error" banner) is kept off the user's terminal.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from onnx import TensorProto, helper

from ..errors import ProviderError

ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
CHOICES = ("auto", "cpu", "cuda", "tensorrt")
# Validation needs real float32 on the GPU: TF32 matmuls would differ by about 1e-3.  cuDNN's
# heuristic algorithm choice (not a timed search) keeps the convolutions of the runs compared
# the same from one session to the next.
_PROVIDER_OPTIONS = {"cuda": {"use_tf32": "0", "cudnn_conv_algo_search": "DEFAULT"}, "tensorrt": {}, "cpu": {}}
_INSTALL_HINT = 'pip install "qarep-onnx[cuda]" installs them beside onnxruntime-gpu'


@dataclass(frozen=True)
class ProviderChoice:
    name: str  # "cpu", "cuda" or "tensorrt"
    note: str  # one line for people: which provider and why
    options: dict = field(default_factory=dict)

    @property
    def session_providers(self) -> list:
        if self.name == "cpu":
            return ["CPUExecutionProvider"]
        return [(ORT_NAMES[self.name], self.options), "CPUExecutionProvider"]

    def for_timing(self) -> ProviderChoice:
        """The same provider with its default options (what a deployment runs), for latency."""
        return ProviderChoice(self.name, self.note)


@functools.cache
def preload_gpu_libraries() -> bool:
    """Let onnxruntime find the CUDA and cuDNN libraries of pip's nvidia-* wheels (``qarep-onnx[cuda]``).

    ``onnxruntime.preload_dlls`` exists from onnxruntime 1.21; older versions, or a machine without
    those wheels, simply skip it (the provider probe then says what is missing).  True when it ran.
    """
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return False
    try:
        with _silenced():
            preload(cuda=True, cudnn=True, msvc=False)
    except Exception:  # missing libraries are reported by the probe, in one line
        return False
    return True


@contextlib.contextmanager
def _silenced():
    """Mute stdout and stderr at the file-descriptor level (onnxruntime's C++ logs included)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _probe_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model.SerializeToString()


@functools.cache
def probe(name: str) -> str | None:
    """None when ``name`` really runs here, else a one-line reason."""
    import onnxruntime as ort

    if name == "cpu":
        return None
    if ORT_NAMES[name] not in ort.get_available_providers():
        return f"this onnxruntime build ({ort.__version__}) has no {ORT_NAMES[name]}; install onnxruntime-gpu"
    preload_gpu_libraries()
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        with _silenced():
            session = ort.InferenceSession(
                _probe_model(), options, providers=[(ORT_NAMES[name], _PROVIDER_OPTIONS[name]), "CPUExecutionProvider"]
            )
    except Exception as exc:  # onnxruntime raises its own types
        return f"{ORT_NAMES[name]} failed to start ({str(exc).splitlines()[0][:160]})"
    if session.get_providers()[0] != ORT_NAMES[name]:
        needs = "CUDA 13 and cuDNN 9" if name == "cuda" else "TensorRT, CUDA 13 and cuDNN 9"
        return f"{ORT_NAMES[name]} could not start: its libraries ({needs}) or a GPU are missing; {_INSTALL_HINT}"
    return None


def select_provider(requested: str = "auto", probe: Callable[[str], str | None] = probe) -> ProviderChoice:
    """Resolve ``auto|cpu|cuda|tensorrt`` to a provider that works, or raise :class:`ProviderError`."""
    if requested not in CHOICES:
        raise ProviderError(f"unknown provider '{requested}'; choose one of {', '.join(CHOICES)}")
    if requested == "cpu":
        return ProviderChoice("cpu", "provider: CPU")
    if requested == "auto":
        reason = probe("cuda")
        if reason is None:
            return ProviderChoice("cuda", "provider: CUDA (auto)", _PROVIDER_OPTIONS["cuda"])
        return ProviderChoice("cpu", f"provider: CPU (auto; CUDA not usable: {reason})")
    reason = probe(requested)
    if reason is not None:
        raise ProviderError(f"{reason}; use cpu or auto", option="provider", value=requested)
    return ProviderChoice(requested, f"provider: {requested.upper() if requested == 'cpu' else ORT_NAMES[requested]}",
                          _PROVIDER_OPTIONS[requested])
