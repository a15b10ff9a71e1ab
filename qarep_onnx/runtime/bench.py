"""Latency of models on onnxruntime: warm-up runs, then timed runs, median and p90.

Models compared run on the same provider with onnxruntime's default graph optimizations and the
provider's default options (what a deployment gets) and the same seeded inputs, interleaved run by
run (in a shuffled order) so that load from other processes on a shared machine affects them alike.
On a GPU the inputs are copied to the device once and every run goes through onnxruntime's IO
binding and waits for its outputs (``synchronize_outputs``): a timing then covers the GPU work
itself, not host copies nor a launch that has not finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from .inputs import random_input_sets
from .providers import ProviderChoice
from .sessions import session


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    runs: int

    @classmethod
    def of(cls, samples_ms: list[float]) -> Latency:
        return cls(float(np.median(samples_ms)), float(np.percentile(samples_ms, 90)), len(samples_ms))


def _plain_runner(s, feeds: dict[str, np.ndarray]) -> Callable[[], None]:
    names = [o.name for o in s.get_outputs()]
    return lambda: s.run(names, feeds)


def _bound_runner(s, feeds: dict[str, np.ndarray], device: str) -> Callable[[], None]:
    """One run through IO binding: inputs already on ``device``, outputs left there, and waited for."""
    import onnxruntime as ort

    binding = s.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    for output in s.get_outputs():
        binding.bind_output(output.name, device)

    def run() -> None:
        s.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


def compare(
    models: list[onnx.ModelProto],
    choice: ProviderChoice,
    warmup: int = 10,
    runs: int = 50,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    on_run: Callable[[], None] | None = None,
    io_binding: bool | None = None,
) -> list[Latency]:
    """Latency of each model (same inputs, same provider), measured interleaved.

    ``io_binding`` defaults to on for GPU providers (see the module docstring).
    """
    feeds = random_input_sets(models[0], 1, 0, input_shapes)[0].feeds
    timing = choice.for_timing()
    sessions = [session(m, timing, optimize_graph=True) for m in models]
    bound = choice.name != "cpu" if io_binding is None else io_binding
    device = "cpu" if choice.name == "cpu" else "cuda"
    runners = [_bound_runner(s, feeds, device) if bound else _plain_runner(s, feeds) for s in sessions]
    for run in runners:
        for _ in range(warmup):
            run()
    samples: list[list[float]] = [[] for _ in models]
    order = np.random.default_rng(0)
    for _ in range(runs):
        # A fresh order each round: a model run right after another is slowed by the caches that
        # one left behind, and a fixed order would always charge the same model for it.
        for i in order.permutation(len(models)):
            start = time.perf_counter()
            runners[i]()
            samples[i].append((time.perf_counter() - start) * 1e3)
        if on_run is not None:
            on_run()
    return [Latency.of(times) for times in samples]
