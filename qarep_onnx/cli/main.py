"""Command line: ``qarep-onnx optimize | inspect | validate | bench | int8 | quantize``.

Every library error becomes one line on stderr and the error's exit code, never a traceback:
0 success, 1 other error, 2 bad input or usage, 3 output not writable (or it would overwrite an
input or another output), 4 validation failed or proved nothing, 5 provider unavailable,
70 internal error, 130 interrupted.  Every path the user asks us to write is checked before
anything is written (:mod:`qarep_onnx.paths`).
"""

from __future__ import annotations

import logging
import os
import sys

import click

from .. import __version__
from ..errors import QarepError, first_line
from ..progress import progress_log
from .common import flag
from .fold import bench_command, inspect_command, optimize_command, validate_command
from .int8 import int8_command, quantize_command


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


for _command in (optimize_command, inspect_command, validate_command, bench_command, int8_command, quantize_command):
    cli.add_command(_command)


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
        click.echo(f"qarep-onnx: error: {exc.render(flag)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("qarep-onnx: aborted; no output written", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # click's own words, on one line like every other error
        command = exc.ctx.command_path if exc.ctx is not None else "qarep-onnx"
        message = first_line(exc.format_message()).rstrip(".")
        click.echo(f"qarep-onnx: error: {message} (see '{command} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"qarep-onnx: error: {first_line(exc.format_message())}", err=True)
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
            f"qarep-onnx: internal error: {type(exc).__name__}: {first_line(exc)} "
            "(set QAREP_ONNX_DEBUG=1 for the traceback and please report it)",
            err=True,
        )
        sys.exit(70)
