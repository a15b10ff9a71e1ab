"""Latency of models on onnxruntime: warm-up runs, then timed runs, median and p90.

Models compared run on the same provider with onnxruntime's default graph optimizations (what a
deployment gets) and the same seeded inputs, interleaved run by run (in a shuffled order) so that
load from other processes on a shared machine affects them alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from .providers import ProviderChoice, session
from .inputs import random_input_sets


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    runs: int

    @classmethod
    def of(cls, samples_ms: list[float]) -> Latency:
        return cls(float(np.median(samples_ms)), float(np.percentile(samples_ms, 90)), len(samples_ms))


def compare(
    models: list[onnx.ModelProto],
    choice: ProviderChoice,
    warmup: int = 10,
    runs: int = 50,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    on_run: Callable[[], None] | None = None,
) -> list[Latency]:
    """Latency of each model (same inputs, same provider), measured interleaved."""
    feeds = random_input_sets(models[0], 1, 0, input_shapes)[0].feeds
    sessions = [session(m, choice, optimize_graph=True) for m in models]
    outputs = [[o.name for o in s.get_outputs()] for s in sessions]
    for s, names in zip(sessions, outputs):
        for _ in range(warmup):
            s.run(names, feeds)
    samples: list[list[float]] = [[] for _ in models]
    order = np.random.default_rng(0)
    for _ in range(runs):
        # A fresh order each round: a model run right after another is slowed by the caches that
        # one left behind, and a fixed order would always charge the same model for it.
        for i in order.permutation(len(models)):
            start = time.perf_counter()
            sessions[i].run(outputs[i], feeds)
            samples[i].append((time.perf_counter() - start) * 1e3)
        if on_run is not None:
            on_run()
    return [Latency.of(times) for times in samples]
