"""Command line: ``qarep-onnx optimize | inspect | bench``.  The only module that prints.

Every library error becomes one line on stderr and the error's exit code, never a traceback:
0 success, 1 other error, 2 bad input or usage, 3 output not writable, 4 validation mismatch,
5 provider unavailable, 70 internal error, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from . import __version__, load_model
from . import optimize as optimize_model
from .bench import compare
from .errors import OutputPathError, QarepError, ValidationError
from .io import save_model
from .progress import progress_log, step
from .providers import CHOICES, select_provider
from .render import explain_lines, latency_lines, summary_lines
from .report import Report


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


class _Output:
    """Where text goes: stdout normally, stderr when stdout carries JSON, nowhere with -q."""

    def __init__(self, quiet: bool, json_to_stdout: bool) -> None:
        self.quiet = quiet
        self.err = json_to_stdout

    def lines(self, lines: list[str]) -> None:
        if not self.quiet:
            for line in lines:
                click.echo(line, err=self.err)


def _write_json(report: Report, path: str | None) -> None:
    if path is None:
        return
    text = json.dumps(report.to_dict(), indent=2)
    if path == "-":
        click.echo(text)
        return
    target = Path(path)
    if not target.parent.is_dir():
        raise OutputPathError(f"{target}: the folder {target.parent} does not exist")
    try:
        target.write_text(text + "\n")
    except OSError as exc:
        raise OutputPathError(f"{target}: cannot write the report ({exc.strerror or exc})") from exc


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
@click.option("--keep-post-bn", is_flag=True, help="Keep the BatchNorm after each block's sum as its own node (partial fusion).")
@click.option("--force", is_flag=True, help="Allow OUT to be the same file as IN.")
@click.option(
    "--external-data", is_flag=False, flag_value="", default=None, metavar="[LOCATION]",
    help="Write weights to an external data file (default name: OUT.data). Automatic when IN had one or OUT passes 2 GB.",
)
@click.option("--validate", is_flag=True, help="Check on onnxruntime that OUT computes what IN computes; on a mismatch OUT is not written.")
@_provider_option
@click.option("--rtol", type=float, help="Relative tolerance for --validate (default by dtype: fp32 1e-5, fp16 1e-2).")
@click.option("--atol", type=float, default=0.0, show_default=True, help="Absolute tolerance for --validate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the validation inputs.")
@_input_shape_option
@click.option("--explain", is_flag=True, help="List every region folded or refused, and why.")
@_json_option
@click.pass_obj
def optimize_command(obj, input_path, output_path, keep_post_bn, force, external_data, validate, provider, rtol, atol,
                     seed, input_shapes, explain, json_path) -> None:
    """Fold every block of IN into one Conv and write the result to OUT."""
    if _same_file(input_path, output_path) and not force:
        raise OutputPathError(f"{output_path}: OUT is the input file; choose another path or pass --force")
    out = _Output(obj["quiet"], json_path == "-")
    try:
        result = optimize_model(
            input_path, keep_post_bn=keep_post_bn, validate=validate, provider=provider, rtol=rtol, atol=atol,
            input_shapes=input_shapes, seed=seed,
        )
    except ValidationError as failed:  # the report says how far off each output was
        if failed.report is not None:
            _write_json(failed.report, json_path)
        raise
    if external_data:  # a location was given
        external = external_data
    elif external_data == "" or result.report.input_external_data:
        external = True
    else:
        external = None  # one file, unless the model passes 2 GB
    with step(f"saving {output_path}"):
        data_file = save_model(result.model, output_path, external_data=external, keep_model=False)
    if explain:
        out.lines(explain_lines(result.report))
    wrote = f"wrote {output_path}" + (f" (weights in {data_file.name})" if data_file else "")
    out.lines(summary_lines(result.report, explained=explain) + [wrote])
    _write_json(result.report, json_path)


@cli.command("inspect")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--keep-post-bn", is_flag=True, help="Show what partial fusion would do.")
@_input_shape_option
@_json_option
@click.pass_obj
def inspect_command(obj, model_path, keep_post_bn, input_shapes, json_path) -> None:
    """Show what optimize would fold or refuse in MODEL; writes nothing."""
    out = _Output(obj["quiet"], json_path == "-")
    result = optimize_model(model_path, keep_post_bn=keep_post_bn, input_shapes=input_shapes)
    out.lines(explain_lines(result.report) + summary_lines(result.report, explained=True))
    _write_json(result.report, json_path)


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
    if optimized_path is None:
        original = load_model(input_path)
        optimized = optimize_model(original, keep_post_bn=keep_post_bn).model
    else:
        original, optimized = load_model(input_path), load_model(optimized_path)
    choice = select_provider(provider)
    hidden = obj["quiet"] or not sys.stderr.isatty()
    with click.progressbar(length=runs, label="benchmarking", file=sys.stderr, hidden=hidden) as bar:
        before, after = compare([original, optimized], choice, warmup, runs, input_shapes, lambda: bar.update(1))
    out.lines(latency_lines(before, after, choice.note))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def main() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("qarep_onnx").addHandler(handler)
    try:
        cli.main(standalone_mode=False, prog_name="qarep-onnx")
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
    except Exception as exc:  # a bug: still one line, with the way to see the traceback
        if os.environ.get("QAREP_ONNX_DEBUG"):
            raise
        click.echo(
            f"qarep-onnx: internal error: {type(exc).__name__}: {exc} (set QAREP_ONNX_DEBUG=1 for the traceback "
            "and please report it)",
            err=True,
        )
        sys.exit(70)
