"""Command line: ``qarep-onnx optimize IN OUT``.  The only module that prints.

Every library error becomes one line on stderr and the error's exit code; no traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from . import __version__, optimize as optimize_model
from .errors import OutputPathError, QarepError
from .io import save_model
from .report import Report

_SHOWN_OPS = ("Conv", "BatchNormalization", "Add", "Mul")
_MAX_REFUSALS_SHOWN = 5


def _summary(report: Report) -> list[str]:
    lines = [f"folded {report.blocks_folded} blocks ({report.regions_folded} regions) into single Convs"]
    width = max(len(op) for op in _SHOWN_OPS)
    lines.append(f"  {'op':<{width}}  before  after")
    for op in _SHOWN_OPS:
        before, after = report.op_counts_before.get(op, 0), report.op_counts_after.get(op, 0)
        lines.append(f"  {op:<{width}}  {before:>6}  {after:>5}")
    if report.refusals:
        lines.append(f"refused {len(report.refusals)}:")
        for refusal in report.refusals[:_MAX_REFUSALS_SHOWN]:
            lines.append(f"  [{refusal.code}] {refusal.message}")
        if len(report.refusals) > _MAX_REFUSALS_SHOWN:
            lines.append(f"  ... and {len(report.refusals) - _MAX_REFUSALS_SHOWN} more")
    return lines


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qarep-onnx")
def cli() -> None:
    """Fold re-parameterizable blocks (QARepVGG, RepVGG, MobileOne, ...) of ONNX models into single Convs."""


@cli.command("optimize")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--keep-post-bn", is_flag=True, help="Keep the BatchNorm after each block's sum as its own node (partial fusion).")
@click.option("--force", is_flag=True, help="Allow OUT to be the same file as IN.")
def optimize_command(input_path: Path, output_path: Path, keep_post_bn: bool, force: bool) -> None:
    """Fold every block of IN into one Conv and write the result to OUT."""
    if _same_file(input_path, output_path) and not force:
        raise OutputPathError(f"{output_path}: OUT is the input file; choose another path or pass --force")
    result = optimize_model(input_path, keep_post_bn=keep_post_bn)
    save_model(result.model, output_path)
    for line in _summary(result.report):
        click.echo(line)
    click.echo(f"wrote {output_path}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cli.main(standalone_mode=False, prog_name="qarep-onnx")
    except QarepError as exc:
        click.echo(f"qarep-onnx: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("qarep-onnx: aborted", err=True)
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
