"""Inputs for running a model: seeded random sets, or the user's own arrays from ``.npz``/``.npy`` files.

Random sets take turns over three value ranges, so that several samples exercise a network the way
different data would: standard normal noise, images scaled to [0, 1), and images in [0, 255).
Integer inputs get 0 or 1 (valid as indices and flags), except scalar integers (counts, trip
counts), which get 1, 2, 3, ... by sample.  A file must match the model's inputs by name, dtype,
rank and static dimensions; anything else is a :class:`~qarep_onnx.errors.UsageError` that says
what to change.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx

from ..errors import UsageError, first_line

# Random value ranges, used in turn by sample: (name, low, high); None, None is standard normal.
RANGES = (("normal", None, None), ("[0, 1)", 0.0, 1.0), ("[0, 255)", 0.0, 255.0))
# One generated input may not take more memory than this: a mistyped --input-shape should fail in
# one line, not exhaust the machine.
MAX_INPUT_BYTES = 4 * 2**30


@dataclass(frozen=True)
class InputSet:
    feeds: dict[str, np.ndarray]
    description: str  # for reports: "random normal (seed 0)", "file images.npz"


@dataclass(frozen=True)
class InputSpec:
    """What a model expects for one input."""

    name: str
    dtype: np.dtype
    dims: tuple[int | str | None, ...]  # an int, a symbolic name, or None (unknown)


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs a caller must feed (graph inputs that are not initializers), as specs."""
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise UsageError(f"input '{value.name}' is a {kind or 'value of unknown type'}; only tensor inputs can be fed")
        tt = value.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
        if dtype is None or dtype.kind not in "fiub":
            name = onnx.TensorProto.DataType.Name(tt.elem_type) if tt.elem_type in onnx.TensorProto.DataType.values() else tt.elem_type
            raise UsageError(f"input '{value.name}' has element type {name}, which cannot be generated or fed here")
        if not tt.HasField("shape"):
            dims = None
        else:
            # A negative dim (paddle2onnx writes -1) is a free dim, like a symbolic one.
            dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or None)
                         for d in tt.shape.dim)
        specs.append(InputSpec(value.name, dtype, dims))
    return specs


def resolve_shapes(specs: list[InputSpec], given: dict[str, tuple[int, ...]] | None) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for every input: the declared static ones, completed or checked by ``given``."""
    given = dict(given or {})
    names = {s.name for s in specs}
    unknown = sorted(set(given) - names)
    if unknown:
        raise UsageError(f"'{unknown[0]}' is not an input of the model (inputs: {', '.join(sorted(names)) or 'none'})",
                         option="input_shapes", value=_spec(unknown[0], given[unknown[0]]))
    shapes = {}
    for spec in specs:
        shape = given.get(spec.name)
        if spec.dims is None:
            if shape is None:
                raise UsageError(f"input '{spec.name}' declares no shape; give it", option="input_shapes",
                                 example=f"{spec.name}:1x3x224x224")
        elif shape is not None:
            if len(shape) != len(spec.dims):
                raise UsageError(
                    f"rank {len(shape)}, but the model's input '{spec.name}' has rank {len(spec.dims)} ({_dims_text(spec.dims)})",
                    option="input_shapes", value=_spec(spec.name, shape),
                )
            clash = [(a, d) for a, (d, s) in enumerate(zip(spec.dims, shape)) if isinstance(d, int) and d != s]
            if clash:
                axis, dim = clash[0]
                raise UsageError(
                    f"contradicts the model, whose input '{spec.name}' has {dim} on axis {axis} ({_dims_text(spec.dims)})",
                    option="input_shapes", value=_spec(spec.name, shape),
                )
        else:
            missing = [d if isinstance(d, str) else "?" for d in spec.dims if not isinstance(d, int)]
            if missing:
                raise UsageError(f"input '{spec.name}' has symbolic dimensions {missing}; give its shape",
                                 option="input_shapes", example=f"{spec.name}:{_example(spec.dims)}")
            shape = tuple(spec.dims)
        size = math.prod(shape) * spec.dtype.itemsize
        if size > MAX_INPUT_BYTES:
            raise UsageError(f"would take {size / 2**30:.1f} GiB as an input; give a smaller shape",
                             option="input_shapes", value=_spec(spec.name, shape))
        shapes[spec.name] = tuple(shape)
    return shapes


def _spec(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}:{'x'.join(map(str, shape))}"


def _dims_text(dims) -> str:
    return "x".join(str(d) if d is not None else "?" for d in dims)


def _example(dims) -> str:
    return "x".join(str(d) if isinstance(d, int) else "1" for d in dims)


def random_input_sets(
    model: onnx.ModelProto, samples: int = 1, seed: int = 0, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> list[InputSet]:
    """``samples`` seeded input sets, taking turns over the value ranges of :data:`RANGES`."""
    return list(random_plan(model, samples, seed, input_shapes))


def random_plan(
    model: onnx.ModelProto | list[InputSpec], samples: int = 1, seed: int = 0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> InputPlan:
    """The same sets as :func:`random_input_sets`, each drawn again when the plan is walked."""
    specs = model if isinstance(model, list) else model_inputs(model)
    shapes = resolve_shapes(specs, input_shapes)
    return InputPlan([(f"random {RANGES[k % len(RANGES)][0]} (seed {seed}, sample {k + 1})",
                       functools.partial(_random_set, specs, shapes, seed, k)) for k in range(samples)])


def _random_set(specs: list[InputSpec], shapes: dict[str, tuple[int, ...]], seed: int, k: int) -> InputSet:
    rng = np.random.default_rng([seed, k])
    kind, low, high = RANGES[k % len(RANGES)]
    feeds = {}
    try:
        for spec in specs:
            shape = shapes[spec.name]
            if spec.dtype.kind == "f":
                values = rng.standard_normal(shape) if low is None else rng.uniform(low, high, shape)
            elif spec.dtype.kind == "b":
                values = rng.integers(0, 2, shape)
            elif not shape:
                values = np.array(1 + k)
            else:
                values = rng.integers(0, 2, shape)
            feeds[spec.name] = np.asarray(values).astype(spec.dtype)
    except MemoryError as exc:
        raise UsageError("the validation inputs do not fit in memory; give smaller input shapes") from exc
    return InputSet(feeds, f"random {kind} (seed {seed}, sample {k + 1})")


class InputPlan:
    """Input sets made (or read) again each time the plan is walked: a run over many of them holds one at a time."""

    def __init__(self, makers: list[tuple[str, Callable[[], InputSet]]]) -> None:
        self._makers = makers

    @property
    def descriptions(self) -> tuple[str, ...]:
        return tuple(description for description, _ in self._makers)

    def __len__(self) -> int:
        return len(self._makers)

    def __iter__(self) -> Iterator[InputSet]:
        for _, make in self._makers:
            yield make()


def input_plan(
    model: onnx.ModelProto | list[InputSpec],
    inputs: Sequence[str | os.PathLike | InputSet] | None,
    samples: int,
    seed: int,
    input_shapes: dict[str, tuple[int, ...]] | None,
) -> InputPlan:
    """Given input sets and files (each file checked now, read again for each walk), or seeded random sets."""
    if not inputs:
        return random_plan(model, samples, seed, input_shapes)
    specs = model if isinstance(model, list) else model_inputs(model)
    makers = []
    for item in inputs:
        if isinstance(item, InputSet):
            makers.append((item.description, lambda item=item: item))
        else:
            checked = _load_one(Path(item), specs, "inputs")
            makers.append((checked.description, functools.partial(_load_one, Path(item), specs, "inputs")))
    return InputPlan(makers)


def load_input_sets(model: onnx.ModelProto, paths: list[str | os.PathLike], option: str = "inputs") -> list[InputSet]:
    """One input set per file: ``.npz`` keyed by input name, or ``.npy`` for a one-input model.

    ``option`` is the argument the files came in (errors name it).
    """
    specs = model_inputs(model)
    return [_load_one(Path(p), specs, option) for p in paths]


def _load_one(path: Path, specs: list[InputSpec], option: str) -> InputSet:
    if not path.is_file():
        raise UsageError("no such file", option=option, value=path)
    try:
        if path.suffix == ".npy":
            if len(specs) != 1:
                names = ", ".join(s.name for s in specs)
                raise UsageError(f"a .npy file feeds a one-input model; this one has {len(specs)} ({names}): use .npz keyed by name",
                                 option=option, value=path)
            feeds = {specs[0].name: np.load(path, allow_pickle=False)}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                feeds = {name: archive[name] for name in archive.files}
        else:
            raise UsageError("expected a .npz (arrays keyed by input name) or .npy file", option=option, value=path)
    except UsageError:
        raise
    except Exception as exc:  # numpy raises ValueError, OSError, zipfile errors, pickle refusals
        raise UsageError(f"cannot read it as a numpy file ({first_line(exc)})", option=option, value=path) from exc
    expected = {s.name: s for s in specs}
    extra = sorted(set(feeds) - set(expected))
    if extra:
        raise UsageError(f"'{extra[0]}' is not an input of the model (inputs: {', '.join(expected)})", option=option, value=path)
    missing = sorted(set(expected) - set(feeds))
    if missing:
        raise UsageError(f"input '{missing[0]}' is missing (the model's inputs: {', '.join(expected)})", option=option, value=path)
    for name, array in feeds.items():
        spec = expected[name]
        if array.dtype != spec.dtype:
            raise UsageError(f"'{name}' is {array.dtype}, the model's input is {spec.dtype}; save it as {spec.dtype}",
                             option=option, value=path)
        if spec.dims is not None:
            if array.ndim != len(spec.dims):
                raise UsageError(
                    f"'{name}' has shape {list(array.shape)} (rank {array.ndim}); the model's input has "
                    f"rank {len(spec.dims)} ({_dims_text(spec.dims)})", option=option, value=path,
                )
            clash = [a for a, d in enumerate(spec.dims) if isinstance(d, int) and d != array.shape[a]]
            if clash:
                raise UsageError(f"'{name}' has shape {list(array.shape)}; the model's input is {_dims_text(spec.dims)}",
                                 option=option, value=path)
    return InputSet(feeds, f"file {path.name}")


def check_same_inputs(a: onnx.ModelProto, b: onnx.ModelProto, labels: tuple[str, str]) -> None:
    """Two models that are compared or timed on the same feeds must take the same inputs."""
    check_same_specs(model_inputs(a), model_inputs(b), labels)


def check_same_specs(a: list[InputSpec], b: list[InputSpec], labels: tuple[str, str]) -> None:
    """The inputs of two models, as specs, must be the same."""
    sa, sb = {s.name: s for s in a}, {s.name: s for s in b}
    if sa.keys() != sb.keys():
        raise UsageError(f"{labels[0]} takes inputs {sorted(sa)} and {labels[1]} takes {sorted(sb)}; they must be the same")
    for name, x in sa.items():
        y = sb[name]
        if x.dtype != y.dtype:
            raise UsageError(f"input '{name}' is {x.dtype} in {labels[0]} and {y.dtype} in {labels[1]}")
        if x.dims is not None and y.dims is not None:
            if len(x.dims) != len(y.dims) or any(isinstance(p, int) and isinstance(q, int) and p != q for p, q in zip(x.dims, y.dims)):
                raise UsageError(
                    f"input '{name}' is {_dims_text(x.dims)} in {labels[0]} and {_dims_text(y.dims)} in {labels[1]}"
                )
