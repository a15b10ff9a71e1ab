"""What the commands share: option decorators, where text goes, output paths, loading, JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import click

from ..io import LoadedModel, read_model
from ..paths import OutputPath, resolve_output
from ..progress import step
from ..runtime.providers import CHOICES
from ..save import write_text

# The flag that gives each option of the library's calls (errors name the option; people typed the flag).
FLAGS = {
    "inputs": "--inputs",
    "input_shapes": "--input-shape",
    "provider": "--provider",
    "samples": "--samples",
    "seed": "--seed",
    "rtol": "--rtol",
    "atol": "--atol",
    "calib": "--calib",
    "holdout": "--holdout",
    "target_sqnr": "--target-sqnr",
    "max_layers": "--max-layers",
    "exclude": "--exclude",
    "percentile": "--percentile",
    "placement": "--placement",
    "calib_method": "--calib-method",
    "float_precision": "--float-precision",
    "weights": "--weights",
    "output_map": "--output-map",
}


def flag(option: str) -> str:
    """The command-line flag of a library option (its own name when it has none)."""
    return FLAGS.get(option, option)


def parse_shapes(ctx, param, values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d <= 0 for d in shape):
            raise click.BadParameter(f"'{value}' is not NAME:DxDx... (e.g. images:1x3x640x640)", ctx, param)
        shapes[name] = shape
    return shapes


def parse_output_map(ctx, param, values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        original, sep, candidate = value.partition("=")
        if not sep or not original or not candidate:
            raise click.BadParameter(f"'{value}' is not ORIG=CAND (an output of ORIGINAL, = , one of CANDIDATE)", ctx, param)
        pairs[original] = candidate
    return pairs


def finite(ctx, param, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", ctx, param)
    return value


def input_shape_option(f):
    return click.option(
        "--input-shape", "input_shapes", multiple=True, callback=parse_shapes, metavar="NAME:1x3xHxW",
        help="Shape of an input with symbolic dimensions (repeatable).",
    )(f)


def provider_option(f):
    return click.option(
        "--provider", type=click.Choice(CHOICES), default="auto", show_default=True,
        help="onnxruntime provider; auto uses CUDA when it really works here, else the CPU.",
    )(f)


def json_option(f):
    return click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON to PATH ('-' for stdout).")(f)


def checking_options(f):
    """The options of a validation: tolerance, inputs, provider."""
    options = [
        provider_option,
        click.option("--rtol", type=click.FloatRange(min=0), callback=finite,
                     help="Explicit tolerance atol + rtol * max(1, max|a|) instead of the one calibrated to the model's own float noise."),
        click.option("--atol", type=click.FloatRange(min=0), default=0.0, show_default=True, callback=finite,
                     help="Absolute slack added to the tolerance."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random inputs."),
        click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Random input sets (normal noise, images in [0,1), images in [0,255), in turn)."),
        click.option("--inputs", "input_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
                     help="Real inputs: .npz keyed by input name, or .npy for a one-input model (repeatable)."),
        input_shape_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


class Output:
    """Where text goes: stdout normally, stderr when stdout carries JSON, nowhere with -q."""

    def __init__(self, quiet: bool, json_to_stdout: bool) -> None:
        self.quiet = quiet
        self.err = json_to_stdout

    def lines(self, lines: list[str]) -> None:
        if not self.quiet:
            for line in lines:
                click.echo(line, err=self.err)


def planned_outputs(*outputs: tuple[str, str | os.PathLike | None]) -> list[OutputPath]:
    """The outputs the user named (``-`` and absent ones left out), each resolved and checked."""
    return [resolve_output(path, role) for role, path in outputs if path is not None and str(path) != "-"]


def notes_of(planned: list[OutputPath]) -> list[str]:
    return [p.note for p in planned if p.note]


def inputs_of(label: str, path: Path, loaded: LoadedModel | None = None) -> list[tuple[str, Path]]:
    files = [(label, path)]
    if loaded is not None:
        files += [(f"{label}'s external data file", f) for f in loaded.data_files]
    return files


def load(path: Path) -> LoadedModel:
    with step(f"loading {path}"):
        return read_model(path)


def write_json(document: dict, path: str | None) -> None:
    if path is None:
        return
    text = json.dumps(document, indent=2)
    if path == "-":
        click.echo(text)
    else:
        write_text(path, text + "\n", "the JSON report")

