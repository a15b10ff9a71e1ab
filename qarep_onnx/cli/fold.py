"""The fold's commands: ``optimize``, ``inspect``, ``validate`` and ``bench``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..api import optimize_loaded
from ..errors import ValidationError
from ..fold.report import REPORT_SCHEMA_VERSION
from ..io import LoadedModel, load_model
from ..paths import check_outputs, resolve_output
from ..progress import step
from ..runtime.bench import compare
from ..runtime.inputs import check_same_inputs
from ..runtime.providers import select_provider
from ..runtime.validation import validate as validate_models
from ..save import external_data_location, save_model
from .common import (
    Output,
    checking_options,
    input_shape_option,
    inputs_of,
    json_option,
    load,
    notes_of,
    parse_output_map,
    planned_outputs,
    provider_option,
    write_json,
)
from .render import explain_lines, latency_lines, summary_lines, validation_lines


@click.command("optimize")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("output_path", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--keep-post-bn", is_flag=True, help="Keep every BatchNorm that ends a block as its own node (partial fusion).")
@click.option("--force", is_flag=True, help="Allow OUT to be the same file as IN.")
@click.option(
    "--external-data", is_flag=False, flag_value="", default=None, metavar="[LOCATION]",
    help="Write weights to an external data file (default name: OUT.data). Automatic when IN had one or OUT passes 2 GB.",
)
@click.option("--validate", is_flag=True, help="Check on onnxruntime that OUT computes what IN computes; if not, OUT is not written.")
@checking_options
@click.option("--explain", is_flag=True, help="List every region folded or refused, and why.")
@json_option
@click.pass_obj
def optimize_command(obj, input_path, output_path, keep_post_bn, force, external_data, validate, provider, rtol, atol,
                     seed, samples, input_files, input_shapes, explain, json_path) -> None:
    """Fold every block of IN into one Conv and write the result to OUT."""
    out = Output(obj["quiet"], json_path == "-")
    if not validate and provider != "auto":
        select_provider(provider)  # asked for by name: an unusable provider is an error even without --validate
    allow = ("OUT", "IN") if force else None
    planned = planned_outputs(("OUT", output_path), ("--json", json_path))
    check_outputs(planned, inputs_of("IN", input_path), allow)
    loaded = load(input_path)
    protected = inputs_of("IN", input_path, loaded)
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
            write_json(failed.report.to_dict(), json_path)
        raise
    with step(f"saving {output_path}"):
        data_file = save_model(result.model, output_path, external_data=external, keep_model=False,
                               protected=[p for p in protected if allow is None or p[0] != "IN"])
    if explain:
        out.lines(explain_lines(result.report))
    wrote = f"wrote {output_path}" + (f" (weights in {data_file.name})" if data_file else "")
    out.lines(summary_lines(result.report, explained=explain) + notes_of(planned) + [wrote])
    write_json(result.report.to_dict(), json_path)


@click.command("inspect")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--keep-post-bn", is_flag=True, help="Show what partial fusion would do.")
@input_shape_option
@json_option
@click.pass_obj
def inspect_command(obj, model_path, keep_post_bn, input_shapes, json_path) -> None:
    """Show what optimize would fold or refuse in MODEL; writes nothing but the --json report."""
    out = Output(obj["quiet"], json_path == "-")
    planned = planned_outputs(("--json", json_path))
    check_outputs(planned, inputs_of("MODEL", model_path))
    loaded = load(model_path)
    check_outputs(planned, inputs_of("MODEL", model_path, loaded))
    result = optimize_loaded(loaded, owned=True, keep_post_bn=keep_post_bn, input_shapes=input_shapes)
    out.lines(explain_lines(result.report) + summary_lines(result.report, explained=True) + notes_of(planned))
    write_json(result.report.to_dict(), json_path)


@click.command("validate")
@click.argument("original_path", metavar="ORIGINAL", type=click.Path(path_type=Path))
@click.argument("candidate_path", metavar="CANDIDATE", type=click.Path(path_type=Path))
@checking_options
@click.option("--output-map", "output_map", multiple=True, callback=parse_output_map, metavar="ORIG=CAND",
              help="Pair an output of ORIGINAL with one of CANDIDATE by name (repeatable); by default outputs pair "
                   "by name, else by position.")
@json_option
@click.pass_obj
def validate_command(obj, original_path, candidate_path, provider, rtol, atol, seed, samples, input_files, input_shapes,
                     output_map, json_path) -> None:
    """Check that CANDIDATE computes what ORIGINAL computes (exit 0), or not (exit 4)."""
    out = Output(obj["quiet"], json_path == "-")
    planned = planned_outputs(("--json", json_path))
    inputs = inputs_of("ORIGINAL", original_path) + inputs_of("CANDIDATE", candidate_path)
    check_outputs(planned, inputs)
    for label, path in (("ORIGINAL", original_path), ("CANDIDATE", candidate_path)):  # one model in memory at a time
        check_outputs(planned, inputs_of(label, path, load(path)))
    with step("validating"):
        result = validate_models(
            original_path, candidate_path, provider=provider, seed=seed, samples=samples,
            inputs=list(input_files) or None, rtol=rtol, atol=atol, input_shapes=input_shapes,
            output_map=output_map or None,
        )
    out.lines(validation_lines(result) + notes_of(planned))
    write_json({"schema_version": REPORT_SCHEMA_VERSION, "validation": result.to_dict()}, json_path)
    if not result.passed:
        raise ValidationError(result.summary())


@click.command("bench")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.argument("optimized_path", metavar="[OUT]", required=False, type=click.Path(path_type=Path))
@provider_option
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True, help="Timed runs per model.")
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True, help="Untimed runs first.")
@click.option("--keep-post-bn", is_flag=True, help="Without OUT: optimize with partial fusion.")
@input_shape_option
@click.pass_obj
def bench_command(obj, input_path, optimized_path, provider, runs, warmup, keep_post_bn, input_shapes) -> None:
    """Latency of IN against its optimized form (OUT, or IN optimized in memory)."""
    out = Output(obj["quiet"], False)
    choice = select_provider(provider)
    if optimized_path is None:
        original = load(input_path).model
        optimized = optimize_loaded(LoadedModel(original, (), 0), owned=False, keep_post_bn=keep_post_bn).model
    else:
        original, optimized = load_model(input_path), load_model(optimized_path)
        check_same_inputs(original, optimized, ("IN", "OUT"))
    hidden = obj["quiet"] or not sys.stderr.isatty()
    with click.progressbar(length=runs, label="benchmarking", file=sys.stderr, hidden=hidden) as bar:
        before, after = compare([original, optimized], choice, warmup, runs, input_shapes, lambda: bar.update(1))
    out.lines(latency_lines(before, after, choice.note))
