"""Command line: ``qarep-onnx optimize | inspect | validate | bench | int8 | quantize``.  The only module that prints.

Every library error becomes one line on stderr and the error's exit code, never a traceback:
0 success, 1 other error, 2 bad input or usage, 3 output not writable (or it would overwrite an
input or another output), 4 validation failed or proved nothing, 5 provider unavailable,
70 internal error, 130 interrupted.  Every path the user asks us to write is checked before
anything is written (:mod:`qarep_onnx.paths`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import click

from .. import __version__
from ..api import optimize_loaded
from ..runtime.bench import compare
from ..errors import QarepError, UsageError, ValidationError
from ..int8.sensitivity import DEFAULT_MAX_LAYERS, DEFAULT_TARGET_SQNR_DB
from ..runtime.inputs import check_same_inputs
from ..io import LoadedModel, external_data_location, load_model, read_model, save_model, write_text
from ..paths import OutputPath, check_outputs, resolve_output
from ..progress import progress_log, step
from ..runtime.providers import CHOICES, select_provider
from .render import explain_lines, latency_lines, summary_lines, validation_lines
from ..fold.report import validation_report
from ..runtime.validation import validate as validate_models


def _parse_shapes(ctx, param, values: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
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


def _finite(ctx, param, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", ctx, param)
    return value


def _input_shape_option(f):
    return click.option(
        "--input-shape", "input_shapes", multiple=True, callback=_parse_shapes, metavar="NAME:1x3xHxW",
        help="Shape of an input with symbolic dimensions (repeatable).",
    )(f)


def _provider_option(f):
    return click.option(
        "--provider", type=click.Choice(CHOICES), default="auto", show_default=True,
        help="onnxruntime provider; auto uses CUDA when it really works here, else the CPU.",
    )(f)


def _json_option(f):
    return click.option("--json", "json_path", metavar="PATH", help="Write the report as JSON to PATH ('-' for stdout).")(f)


def _checking_options(f):
    """The options of a validation: tolerance, inputs, provider."""
    options = [
        _provider_option,
        click.option("--rtol", type=click.FloatRange(min=0), callback=_finite,
                     help="Explicit tolerance atol + rtol * max(1, max|a|) instead of the one calibrated to the model's own float noise."),
        click.option("--atol", type=click.FloatRange(min=0), default=0.0, show_default=True, callback=_finite,
                     help="Absolute slack added to the tolerance."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random inputs."),
        click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Random input sets (normal noise, images in [0,1), images in [0,255), in turn)."),
        click.option("--inputs", "input_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
                     help="Real inputs: .npz keyed by input name, or .npy for a one-input model (repeatable)."),
        _input_shape_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


class _Output:
    """Where text goes: stdout normally, stderr when stdout carries JSON, nowhere with -q."""

    def __init__(self, quiet: bool, json_to_stdout: bool) -> None:
        self.quiet = quiet
        self.err = json_to_stdout

    def lines(self, lines: list[str]) -> None:
        if not self.quiet:
            for line in lines:
                click.echo(line, err=self.err)


def _planned(*outputs: tuple[str, str | os.PathLike | None]) -> list[OutputPath]:
    """The outputs the user named (``-`` and absent ones left out), each resolved and checked."""
    return [resolve_output(path, role) for role, path in outputs if path is not None and str(path) != "-"]


def _notes(planned: list[OutputPath]) -> list[str]:
    return [p.note for p in planned if p.note]


def _inputs_of(label: str, path: Path, loaded: LoadedModel | None = None) -> list[tuple[str, Path]]:
    files = [(label, path)]
    if loaded is not None:
        files += [(f"{label}'s external data file", f) for f in loaded.data_files]
    return files


def _load(path: Path) -> LoadedModel:
    with step(f"loading {path}"):
        return read_model(path)


def _write_json(document: dict, path: str | None) -> None:
    if path is None:
        return
    text = json.dumps(document, indent=2)
    if path == "-":
        click.echo(text)
    else:
        write_text(path, text + "\n", "the JSON report")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qarep-onnx")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("-v", "--verbose", count=True, help="Log what happens (-vv for debug detail).")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: int) -> None:
    """Fold re-parameterizable blocks (QARepVGG, RepVGG, MobileOne, ...) of ONNX models into single Convs."""
    ctx.obj = {"quiet": quiet}
    if verbose:
        logging.getLogger("qarep_onnx").setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    elif not quiet and sys.stderr.isatty():
        progress_log.setLevel(logging.INFO)  # step-by-step progress for people at a terminal


@cli.command("optimize")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--keep-post-bn", is_flag=True, help="Keep every BatchNorm that ends a block as its own node (partial fusion).")
@click.option("--force", is_flag=True, help="Allow OUT to be the same file as IN.")
@click.option(
    "--external-data", is_flag=False, flag_value="", default=None, metavar="[LOCATION]",
    help="Write weights to an external data file (default name: OUT.data). Automatic when IN had one or OUT passes 2 GB.",
)
@click.option("--validate", is_flag=True, help="Check on onnxruntime that OUT computes what IN computes; if not, OUT is not written.")
@_checking_options
@click.option("--explain", is_flag=True, help="List every region folded or refused, and why.")
@_json_option
@click.pass_obj
def optimize_command(obj, input_path, output_path, keep_post_bn, force, external_data, validate, provider, rtol, atol,
                     seed, samples, input_files, input_shapes, explain, json_path) -> None:
    """Fold every block of IN into one Conv and write the result to OUT."""
    out = _Output(obj["quiet"], json_path == "-")
    if not validate and provider != "auto":
        select_provider(provider)  # asked for by name: an unusable provider is an error even without --validate
    allow = ("OUT", "IN") if force else None
    planned = _planned(("OUT", output_path), ("--json", json_path))
    check_outputs(planned, _inputs_of("IN", input_path), allow)
    loaded = _load(input_path)
    protected = _inputs_of("IN", input_path, loaded)
    if external_data:  # a location was given
        external = external_data
    elif external_data == "" or loaded.external_data:
        external = True
    else:
        external = None  # one file, unless the model passes 2 GB
    if external is not None:
        location = external_data_location(planned[0], external)
        planned.append(resolve_output(planned[0].target.parent / location, "the external data file", make_folders=True))
    check_outputs(planned, protected, allow)
    try:
        result = optimize_loaded(
            loaded, owned=True, keep_post_bn=keep_post_bn, validate=validate, provider=provider, rtol=rtol, atol=atol,
            input_shapes=input_shapes, seed=seed, samples=samples, inputs=list(input_files) or None,
        )
    except ValidationError as failed:  # the report says how far off each output was; OUT is not written
        if failed.report is not None:
            out.lines(validation_lines(failed.report.validation))
            _write_json(failed.report.to_dict(), json_path)
        raise
    with step(f"saving {output_path}"):
        data_file = save_model(result.model, output_path, external_data=external, keep_model=False,
                               protected=[p for p in protected if allow is None or p[0] != "IN"])
    if explain:
        out.lines(explain_lines(result.report))
    wrote = f"wrote {output_path}" + (f" (weights in {data_file.name})" if data_file else "")
    out.lines(summary_lines(result.report, explained=explain) + _notes(planned) + [wrote])
    _write_json(result.report.to_dict(), json_path)


@cli.command("inspect")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--keep-post-bn", is_flag=True, help="Show what partial fusion would do.")
@_input_shape_option
@_json_option
@click.pass_obj
def inspect_command(obj, model_path, keep_post_bn, input_shapes, json_path) -> None:
    """Show what optimize would fold or refuse in MODEL; writes nothing but the --json report."""
    out = _Output(obj["quiet"], json_path == "-")
    planned = _planned(("--json", json_path))
    check_outputs(planned, _inputs_of("MODEL", model_path))
    loaded = _load(model_path)
    check_outputs(planned, _inputs_of("MODEL", model_path, loaded))
    result = optimize_loaded(loaded, owned=True, keep_post_bn=keep_post_bn, input_shapes=input_shapes)
    out.lines(explain_lines(result.report) + summary_lines(result.report, explained=True) + _notes(planned))
    _write_json(result.report.to_dict(), json_path)


@cli.command("validate")
@click.argument("original_path", metavar="ORIGINAL", type=click.Path(path_type=Path))
@click.argument("candidate_path", metavar="CANDIDATE", type=click.Path(path_type=Path))
@_checking_options
@_json_option
@click.pass_obj
def validate_command(obj, original_path, candidate_path, provider, rtol, atol, seed, samples, input_files, input_shapes,
                     json_path) -> None:
    """Check that CANDIDATE computes what ORIGINAL computes (exit 0), or not (exit 4)."""
    out = _Output(obj["quiet"], json_path == "-")
    planned = _planned(("--json", json_path))
    inputs = _inputs_of("ORIGINAL", original_path) + _inputs_of("CANDIDATE", candidate_path)
    check_outputs(planned, inputs)
    original, candidate = _load(original_path), _load(candidate_path)
    check_outputs(planned, _inputs_of("ORIGINAL", original_path, original) + _inputs_of("CANDIDATE", candidate_path, candidate))
    with step("validating"):
        result = validate_models(
            original.model, candidate.model, provider=provider, seed=seed, samples=samples,
            inputs=list(input_files) or None, rtol=rtol, atol=atol, input_shapes=input_shapes,
        )
    out.lines(validation_lines(result) + _notes(planned))
    _write_json(validation_report(result), json_path)
    if not result.passed:
        raise ValidationError(result.summary())


@cli.command("bench")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("optimized_path", metavar="[OUT]", required=False, type=click.Path(path_type=Path))
@_provider_option
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True, help="Timed runs per model.")
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True, help="Untimed runs first.")
@click.option("--keep-post-bn", is_flag=True, help="Without OUT: optimize with partial fusion.")
@_input_shape_option
@click.pass_obj
def bench_command(obj, input_path, optimized_path, provider, runs, warmup, keep_post_bn, input_shapes) -> None:
    """Latency of IN against its optimized form (OUT, or IN optimized in memory)."""
    out = _Output(obj["quiet"], False)
    choice = select_provider(provider)
    if optimized_path is None:
        original = _load(input_path).model
        optimized = optimize_loaded(LoadedModel(original, (), 0), owned=False, keep_post_bn=keep_post_bn).model
    else:
        original, optimized = load_model(input_path), load_model(optimized_path)
        check_same_inputs(original, optimized, ("IN", "OUT"))
    hidden = obj["quiet"] or not sys.stderr.isatty()
    with click.progressbar(length=runs, label="benchmarking", file=sys.stderr, hidden=hidden) as bar:
        before, after = compare([original, optimized], choice, warmup, runs, input_shapes, lambda: bar.update(1))
    out.lines(latency_lines(before, after, choice.note))


# ---------------------------------------------------------------------------------------------------
# INT8 (issue 11): `int8` reports what post-training quantization does to a model and its folded
# form; `quantize` folds and writes the Q/DQ model.  The work is in qarep_onnx.int8; this block only
# parses options, checks output paths, shows progress and prints.
# ---------------------------------------------------------------------------------------------------



def _int8_input_options(f):
    """Calibration and held-out inputs, random sets otherwise, and input shapes."""
    options = [
        click.option("--calib", "calib_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
                     help="Calibration inputs: .npz keyed by input name, or .npy for a one-input model, or a folder of them "
                          "(repeatable). Without --holdout the last fifth of them (at least one) measure instead."),
        click.option("--holdout", "holdout_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
                     help="Held-out inputs (files or a folder) to measure FP32 against INT8 (repeatable; needs --calib)."),
        click.option("--samples", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Without --calib: random normal calibration sets (2 more measure). The figures then mean little."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random inputs."),
        click.option("--target-sqnr", type=float, default=DEFAULT_TARGET_SQNR_DB, show_default=True, callback=_finite, metavar="DB",
                     help="End-to-end SQNR (worst output) the layers kept in float must reach."),
        click.option("--max-layers", type=click.IntRange(min=1), default=DEFAULT_MAX_LAYERS, show_default=True,
                     help="Layers the sensitivity analysis measures at most (those predicted costliest)."),
        _input_shape_option,
        click.option("--provider", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True,
                     help="onnxruntime provider that runs the float and Q/DQ models; auto uses CUDA when it really "
                          "works here, else the CPU."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


class _Int8Progress:
    """A progress bar per phase of the sensitivity analysis, on stderr at a terminal only."""

    def __init__(self, hidden: bool) -> None:
        self.hidden = hidden
        self.phase = None
        self.bar = None
        self.done = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase or self.bar is None:
            self.close()
            self.phase, self.done = phase, 0
            self.bar = click.progressbar(length=total, label=phase, file=sys.stderr, hidden=self.hidden)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done
        if done >= total:  # end the bar's line before the next log line
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@cli.command("int8")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@_int8_input_options
@click.option("--no-sensitivity", is_flag=True, help="Skip the per-layer sensitivity analysis.")
@click.option("--all-layers", is_flag=True, help="List every layer (default: the outliers and the worst ones).")
@_json_option
@click.pass_obj
def int8_command(obj, model_path, calib_files, holdout_files, samples, seed, target_sqnr, max_layers, input_shapes,
                 provider, no_sensitivity, all_layers, json_path) -> None:
    """Report what int8 post-training quantization does to MODEL (and to its folded form); writes nothing but --json."""
    from ..int8 import int8_report
    from .int8_render import int8_lines

    out = _Output(obj["quiet"], json_path == "-")
    planned = _planned(("--json", json_path))
    check_outputs(planned, _inputs_of("MODEL", model_path))
    loaded = _load(model_path)
    check_outputs(planned, _inputs_of("MODEL", model_path, loaded))
    with _Int8Progress(obj["quiet"] or not sys.stderr.isatty()) as progress:
        report = int8_report(
            loaded.model, calib=list(calib_files) or None, holdout=list(holdout_files) or None, samples=samples,
            seed=seed, target_sqnr=target_sqnr, max_layers=max_layers, sensitivity=not no_sensitivity,
            provider=provider, input_shapes=input_shapes, progress=progress,
        )
    out.lines(int8_lines(report, str(model_path), all_layers) + _notes(planned))
    _write_json(report.to_dict(), json_path)


@cli.command("quantize")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT", type=click.Path(path_type=Path))
@_int8_input_options
@click.option("--exclude", "exclude", multiple=True, metavar="NODE|auto",
              help="A layer (ONNX node name after the fold) to keep in float (repeatable), or 'auto' for the set the "
                   "sensitivity analysis suggests for --target-sqnr.")
@click.option("--no-fold", is_flag=True, help="Quantize IN as it is, without folding its blocks first.")
@click.option("--force", is_flag=True, help="Allow OUT to be the same file as IN.")
@_json_option
@click.pass_obj
def quantize_command(obj, input_path, output_path, calib_files, holdout_files, samples, seed, target_sqnr, max_layers,
                     input_shapes, provider, exclude, no_fold, force, json_path) -> None:
    """Fold IN (as optimize does), quantize it to int8 Q/DQ for TensorRT, check it on onnxruntime, and write OUT."""
    from ..int8 import quantize
    from .int8_render import quantize_lines

    if "auto" in exclude and len(exclude) > 1:
        raise UsageError("--exclude auto chooses the layers itself; give it alone, or name the layers")
    out = _Output(obj["quiet"], json_path == "-")
    allow = ("OUT", "IN") if force else None
    planned = _planned(("OUT", output_path), ("--json", json_path))
    check_outputs(planned, _inputs_of("IN", input_path), allow)
    loaded = _load(input_path)
    protected = _inputs_of("IN", input_path, loaded)
    external = True if loaded.external_data else None
    if external:
        location = external_data_location(planned[0], external)
        planned.append(resolve_output(planned[0].target.parent / location, "the external data file", make_folders=True))
    check_outputs(planned, protected, allow)
    with _Int8Progress(obj["quiet"] or not sys.stderr.isatty()) as progress:
        result = quantize(
            loaded.model, calib=list(calib_files) or None, holdout=list(holdout_files) or None, samples=samples,
            seed=seed, exclude="auto" if exclude == ("auto",) else list(exclude), fold=not no_fold,
            target_sqnr=target_sqnr, max_layers=max_layers, provider=provider, input_shapes=input_shapes,
            progress=progress,
        )
    with step(f"saving {output_path}"):
        data_file = save_model(result.model, output_path, external_data=external, keep_model=False,
                               protected=[p for p in protected if allow is None or p[0] != "IN"])
    lines = summary_lines(result.report.fold) if result.report.fold is not None else []
    wrote = f"wrote {output_path}" + (f" (weights in {data_file.name})" if data_file else "")
    out.lines(lines + quantize_lines(result.report) + _notes(planned) + [wrote])
    _write_json(result.report.to_dict(), json_path)

# --------------------------------------------------------------------------------------- end of INT8


class _StderrHandler(logging.StreamHandler):
    """Log lines to whatever sys.stderr is when they are written."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def main(args: list[str] | None = None) -> None:
    """Run the command line on ``args`` (default: sys.argv) and exit with its code."""
    logger = logging.getLogger("qarep_onnx")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    try:
        cli.main(args, standalone_mode=False, prog_name="qarep-onnx")
    except QarepError as exc:
        click.echo(f"qarep-onnx: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("qarep-onnx: aborted; no output written", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("qarep-onnx: interrupted; no output written", err=True)
        sys.exit(130)
    except MemoryError:
        click.echo("qarep-onnx: error: out of memory; the model or the validation inputs are too large for this machine", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line, with the way to see the traceback
        if os.environ.get("QAREP_ONNX_DEBUG"):
            raise
        click.echo(
            f"qarep-onnx: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(set QAREP_ONNX_DEBUG=1 for the traceback and please report it)",
            err=True,
        )
        sys.exit(70)
