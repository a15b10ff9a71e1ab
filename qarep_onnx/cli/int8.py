"""INT8 commands: ``int8`` reports what post-training quantization does to a model and its folded form;
``quantize`` folds and writes the Q/DQ model.  The work is in :mod:`qarep_onnx.int8`; this module only
parses options, checks output paths, shows progress and prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import UsageError
from ..int8.calibration_methods import (
    CALIB_METHODS,
    DEFAULT_CALIB_METHOD,
    DEFAULT_PERCENTILE,
)
from ..int8.placement import PLACEMENTS
from ..int8.precision import FLOAT_PRECISIONS
from ..int8.sensitivity import DEFAULT_MAX_LAYERS, DEFAULT_TARGET_SQNR_DB
from ..paths import check_outputs, resolve_output
from ..progress import step
from ..save import external_data_location, save_model, write_text
from .common import (
    Output,
    finite,
    input_shape_option,
    inputs_of,
    json_option,
    load,
    notes_of,
    planned_outputs,
)
from .render import summary_lines


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
        click.option("--target-sqnr", type=float, default=DEFAULT_TARGET_SQNR_DB, show_default=True, callback=finite, metavar="DB",
                     help="End-to-end SQNR (worst output) the layers kept in float must reach."),
        click.option("--max-layers", type=click.IntRange(min=1), default=DEFAULT_MAX_LAYERS, show_default=True,
                     help="Layers the sensitivity analysis measures at most (those predicted costliest)."),
        input_shape_option,
        click.option("--provider", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True,
                     help="onnxruntime provider that runs the float and Q/DQ models; auto uses CUDA when it really "
                          "works here, else the CPU."),
        click.option("--placement", type=click.Choice(PLACEMENTS), default="tensorrt", show_default=True,
                     help="tensorrt: Q/DQ on layer inputs, on the residual input of an Add fused into a layer, and around "
                          "pooling/Concat/Resize/reshapes that feed quantized layers; narrow: layer inputs only."),
        click.option("--calib-method", type=click.Choice(CALIB_METHODS), default=DEFAULT_CALIB_METHOD, show_default=True,
                     help="How activation scales are chosen from the calibration sets."),
        click.option("--percentile", type=click.FloatRange(50, 100), default=DEFAULT_PERCENTILE, show_default=True,
                     help="With --calib-method percentile: the share of magnitudes below the clipping threshold."),
        click.option("--float-precision", type=click.Choice(FLOAT_PRECISIONS), default="fp16", show_default=True,
                     help="Precision of the layers left in float, in the measurement (fp16: TensorRT's --int8 --fp16 "
                          "build; fp32: a strongly typed float32 build)."),
        click.option("--equalize", is_flag=True,
                     help="Cross-layer equalization across Relu/LeakyRelu/PRelu (exact in float), kept only when the "
                          "calibration and the held-out sets both gain."),
        click.option("--exhaustive", is_flag=True,
                     help="Slow reference search for the layers kept in float: every prefix, every layer tried back."),
        click.option("--all-layers", is_flag=True, help="List every layer, pair and name (default: at most ten per list)."),
        click.option("--html", "html_path", metavar="PATH",
                     help="Write a self-contained HTML report (inline SVG figures) to PATH."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _check_html(path: str | None) -> None:
    if path == "-":
        raise UsageError("--html needs a file path (the page is not written to stdout)")


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


@click.command("int8")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@_int8_input_options
@click.option("--no-sensitivity", is_flag=True, help="Skip the per-layer sensitivity analysis.")
@json_option
@click.pass_obj
def int8_command(obj, model_path, calib_files, holdout_files, samples, seed, target_sqnr, max_layers, input_shapes,
                 provider, placement, calib_method, percentile, float_precision, equalize, exhaustive, all_layers,
                 html_path, no_sensitivity, json_path) -> None:
    """Report what int8 post-training quantization does to MODEL (and to its folded form); writes nothing but --json/--html."""
    from ..int8 import int8_report
    from ..int8.html import int8_html
    from .int8_render import int8_lines

    out = Output(obj["quiet"], json_path == "-")
    _check_html(html_path)
    planned = planned_outputs(("--json", json_path), ("--html", html_path))
    check_outputs(planned, inputs_of("MODEL", model_path))
    loaded = load(model_path)
    check_outputs(planned, inputs_of("MODEL", model_path, loaded))
    with _Int8Progress(obj["quiet"] or not sys.stderr.isatty()) as progress:
        report = int8_report(
            loaded.model, calib=list(calib_files) or None, holdout=list(holdout_files) or None, samples=samples,
            seed=seed, target_sqnr=target_sqnr, max_layers=max_layers, sensitivity=not no_sensitivity,
            provider=provider, input_shapes=input_shapes, placement=placement, calib_method=calib_method,
            percentile=percentile, float_precision=float_precision, equalize=equalize, exhaustive=exhaustive,
            progress=progress,
        )
    texts = _documents(report.to_dict(), json_path, int8_html(report, str(model_path)) if html_path else None)
    out.lines(int8_lines(report, str(model_path), all_layers) + notes_of(planned))
    _write(texts, json_path, html_path)


@click.command("quantize")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT", type=click.Path(path_type=Path))
@_int8_input_options
@click.option("--exclude", "exclude", multiple=True, metavar="NAME|OP|REGEX|auto",
              help="Layers to keep in float (repeatable): a node name after the fold, a layer op type (Gemm), or a "
                   "regular expression matching whole names ('/head/.*'); or 'auto' for the set selected for "
                   "--target-sqnr on the calibration sets and confirmed on the held-out sets.")
@click.option("--weights", type=click.Choice(("int8", "float")), default="int8", show_default=True,
              help="int8: quantized weights stored as int8 behind DequantizeLinear (TensorRT 10); float: float weights "
                   "behind Q/DQ (older TensorRT parsers).")
@click.option("--no-fold", is_flag=True, help="Quantize IN as it is, without folding its blocks first.")
@click.option("--force", is_flag=True, help="Allow OUT to be the same file as IN.")
@json_option
@click.pass_obj
def quantize_command(obj, input_path, output_path, calib_files, holdout_files, samples, seed, target_sqnr, max_layers,
                     input_shapes, provider, placement, calib_method, percentile, float_precision, equalize, exhaustive,
                     all_layers, html_path, exclude, weights, no_fold, force, json_path) -> None:
    """Fold IN (as optimize does), quantize it to int8 Q/DQ for TensorRT, check it on onnxruntime, and write OUT."""
    from ..int8 import quantize
    from ..int8.html import quantize_html
    from .int8_render import quantize_lines

    if "auto" in exclude and len(exclude) > 1:
        raise UsageError("--exclude auto chooses the layers itself; give it alone, or name the layers")
    out = Output(obj["quiet"], json_path == "-")
    _check_html(html_path)
    allow = ("OUT", "IN") if force else None
    planned = planned_outputs(("OUT", output_path), ("--json", json_path), ("--html", html_path))
    check_outputs(planned, inputs_of("IN", input_path), allow)
    loaded = load(input_path)
    protected = inputs_of("IN", input_path, loaded)
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
            placement=placement, calib_method=calib_method, percentile=percentile, float_precision=float_precision,
            weights=weights, equalize=equalize, exhaustive=exhaustive, progress=progress,
        )
    texts = _documents(result.report.to_dict(), json_path, quantize_html(result.report, str(input_path)) if html_path else None)
    with step(f"saving {output_path}"):
        data_file = save_model(result.model, output_path, external_data=external, keep_model=False,
                               protected=[p for p in protected if allow is None or p[0] != "IN"])
    lines = summary_lines(result.report.fold) if result.report.fold is not None else []
    wrote = f"wrote {output_path}" + (f" (weights in {data_file.name})" if data_file else "")
    out.lines(lines + quantize_lines(result.report, all_layers) + notes_of(planned) + [wrote])
    _write(texts, json_path, html_path)


def _documents(document: dict, json_path: str | None, page: str | None) -> tuple[str | None, str | None]:
    """The JSON text (strict: ``allow_nan=False``, so no NaN or Infinity token) and the HTML page, made before anything is written."""
    return (json.dumps(document, indent=2, allow_nan=False) if json_path else None), page


def _write(texts: tuple[str | None, str | None], json_path: str | None, html_path: str | None) -> None:
    text, page = texts
    if page is not None:
        write_text(html_path, page, "the HTML report")
    if text is not None:
        if json_path == "-":
            click.echo(text)
        else:
            write_text(json_path, text + "\n", "the JSON report")
