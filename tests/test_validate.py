"""Validation and provider selection: mismatches are caught, inputs are generated, providers resolve."""

import os

import numpy as np
import onnx
import pytest
from helpers.builders import BlockSpec, GraphBuilder, qarep_model
from onnx import helper, numpy_helper

import qarep_onnx
from qarep_onnx.errors import ProviderError
from qarep_onnx.runtime.providers import probe, select_provider

# benchmarks/gpu_check.sh runs these tests on a GPU with QAREP_TEST_PROVIDER=cuda.
PROVIDER = os.environ.get("QAREP_TEST_PROVIDER", "cpu")
from qarep_onnx.runtime.inputs import random_input_sets


def _folded():
    model = qarep_model(BlockSpec(alpha="scalar", bn_3x3="separate"))
    return model, qarep_onnx.optimize(model).model


def test_a_correct_fold_passes_and_a_perturbed_weight_fails():
    model, optimized = _folded()
    assert qarep_onnx.validate(model, optimized, provider=PROVIDER).passed
    weight = next(t for t in optimized.graph.initializer if t.name.endswith(".weight"))
    values = numpy_helper.to_array(weight).copy()
    values[0, 0, 1, 1] += 1e-3
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    result = qarep_onnx.validate(model, optimized, provider=PROVIDER)
    assert not result.passed and result.worst.max_abs_error > 1e-4


def test_validate_accepts_paths(tmp_path):
    model, optimized = _folded()
    onnx.save(model, tmp_path / "a.onnx")
    onnx.save(optimized, tmp_path / "b.onnx")
    assert qarep_onnx.validate(tmp_path / "a.onnx", tmp_path / "b.onnx", provider=PROVIDER).passed


def test_optimize_with_validate_raises_on_mismatch_and_reports_on_success():
    model, _ = _folded()
    result = qarep_onnx.optimize(model, validate=True, provider=PROVIDER)
    assert result.report.validation.passed
    with pytest.raises(qarep_onnx.ValidationError, match="differs by"):
        qarep_onnx.optimize(model, validate=True, provider=PROVIDER, rtol=0.0, atol=0.0)


def _symbolic_model():
    b = GraphBuilder()
    b.inputs.append(helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["batch", 8, "h", "w"]))
    b.inputs.append(helper.make_tensor_value_info("index", onnx.TensorProto.INT64, [2]))
    b.inputs.append(helper.make_tensor_value_info("flag", onnx.TensorProto.BOOL, [1]))
    y = b.op("Add", [b.conv("images", 8, 8, 3), b.conv("images", 8, 8, 1, pad=0)])
    picked = b.op("Gather", [y, "index"], axis=1)
    flag = b.op("Cast", ["flag"], to=onnx.TensorProto.FLOAT)
    return b.model([picked, flag, y])


def test_symbolic_dimensions_need_a_shape_and_the_error_names_them():
    model = _symbolic_model()
    with pytest.raises(qarep_onnx.UsageError, match=r"'images'.*\['batch', 'h', 'w'\].*input shape images:"):
        random_input_sets(model)


def test_several_inputs_of_several_types_and_outputs_validate():
    model = _symbolic_model()
    feeds = random_input_sets(model, input_shapes={"images": (1, 8, 6, 6)})[0].feeds
    assert feeds["index"].dtype == np.int64 and set(np.unique(feeds["index"])) <= {0, 1}
    assert feeds["flag"].dtype == np.bool_
    result = qarep_onnx.optimize(model, validate=True, provider=PROVIDER, input_shapes={"images": (1, 8, 6, 6)})
    assert result.report.blocks_folded == 1
    assert len(result.report.validation.outputs) == 3 and result.report.validation.passed


def test_provider_selection():
    assert select_provider("cpu").name == "cpu"
    assert select_provider("auto", probe=lambda name: None).name == "cuda"
    fallback = select_provider("auto", probe=lambda name: "no GPU here")
    assert fallback.name == "cpu" and "no GPU here" in fallback.note and "\n" not in fallback.note
    with pytest.raises(ProviderError, match="provider cuda: no GPU here"):
        select_provider("cuda", probe=lambda name: "no GPU here")
    with pytest.raises(ProviderError, match="unknown provider"):
        select_provider("rocm")


def test_real_probe_answers_in_one_line():
    for name in ("cuda", "tensorrt"):
        reason = probe(name)
        assert reason is None or (reason and "\n" not in reason)


def test_non_finite_outputs_compare_sensibly():
    from qarep_onnx.runtime.compare import max_error as _max_error

    a = np.array([1.0, np.inf, np.nan, -np.inf])
    assert _max_error(a, a.copy()) == (0.0, 1.0)
    assert _max_error(a, np.array([1.0, np.inf, 0.0, -np.inf]))[0] == np.inf
    assert _max_error(a, np.array([1.5, np.inf, np.nan, np.inf]))[0] == np.inf
    assert _max_error(np.array([1.0, 2.0]), np.array([1.0, 2.5])) == (0.5, 2.0)


# -- a verdict that scales with the network -----------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from helpers.breakage import BREAKAGES, drop_branch  # noqa: E402
from helpers.checks import cli  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "models"
SHALLOW = "qarep_detector__torchscript"
DEEP = "yolonas_deep__torchscript"


def _fixture(name):
    model = onnx.load(FIXTURES / f"{name}.onnx")
    optimized, report = qarep_onnx.optimize(model)
    return model, optimized, report


@pytest.mark.parametrize("name", [SHALLOW, DEEP, "yolonas_deep__dynamo"])
def test_a_correct_fold_passes_with_the_defaults_and_reports_its_noise(name):
    model, optimized, _ = _fixture(name)
    result = qarep_onnx.validate(model, optimized, provider=PROVIDER, samples=3)
    assert result.passed and result.tolerance == "calibrated" and len(result.samples) == 3
    for o in result.outputs:
        assert o.noise_floor > 0 and o.noise_multiple < result.factor / 2
        assert o.relative_error == pytest.approx(o.max_abs_error / max(1, o.max_abs_reference))


def test_the_deep_fixture_is_beyond_a_fixed_1e5_and_its_own_native_export_validates():
    model, optimized, _ = _fixture(DEEP)
    native = onnx.load(FIXTURES / f"{DEEP}__native.onnx")
    fixed = qarep_onnx.validate(model, native, provider=PROVIDER, rtol=1e-5)
    assert not fixed.passed  # what a fixed tolerance would say about PyTorch's own fuse
    assert qarep_onnx.validate(model, native, provider=PROVIDER).passed
    assert not qarep_onnx.validate(model, optimized, provider=PROVIDER, rtol=1e-6).passed


@pytest.mark.parametrize("name", [SHALLOW, DEEP])
@pytest.mark.parametrize("breakage", sorted(BREAKAGES) + ["a branch dropped"])
def test_a_broken_fold_fails(name, breakage):
    model, optimized, report = _fixture(name)
    broken = drop_branch(model, report) if breakage == "a branch dropped" else BREAKAGES[breakage](optimized, report)
    result = qarep_onnx.validate(model, broken, provider=PROVIDER)
    assert result.status == "failed"
    assert result.worst.noise_multiple > 4 * result.factor  # far from the border, not a lucky call


def test_validate_command_accepts_the_native_export_and_rejects_a_broken_fold(tmp_path):
    model, optimized, report = _fixture(DEEP)
    broken = tmp_path / "broken.onnx"
    onnx.save(BREAKAGES["one channel x1.01"](optimized, report), broken)
    report_path = tmp_path / "v.json"
    ok = cli("validate", "--provider", PROVIDER, "--samples", "2", "--json", report_path,
             FIXTURES / f"{DEEP}.onnx", FIXTURES / f"{DEEP}__native.onnx")
    assert ok.returncode == 0, ok.stderr
    assert "validation passed" in ok.stdout and "the model's own float noise" in ok.stdout
    document = json.loads(report_path.read_text())
    assert document["schema_version"] == 3 and document["validation"]["status"] == "passed"
    assert len(document["validation"]["samples"]) == 2
    failed = cli("validate", "--provider", PROVIDER, FIXTURES / f"{DEEP}.onnx", broken)
    assert failed.returncode == 4 and "validation FAILED" in failed.stdout
    assert len(failed.stderr.strip().splitlines()) == 1 and "differs by" in failed.stderr
    api = qarep_onnx.validate(FIXTURES / f"{DEEP}.onnx", broken, provider=PROVIDER)
    assert api.status == "failed" and api.worst.name in failed.stderr


def _renamed_outputs(model, names):
    for output, name in zip(model.graph.output, names):
        for node in model.graph.node:
            node.output[:] = [name if o == output.name else o for o in node.output]
        output.name = name
    return model


def test_two_exports_that_name_their_outputs_differently_pair_by_position(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(qarep_model(BlockSpec()), a)
    onnx.save(_renamed_outputs(qarep_model(BlockSpec()), ["1311"]), b)
    result = cli("validate", "--provider", PROVIDER, a, b)
    assert result.returncode == 0, result.stderr
    assert "paired by position" in result.stdout and "-> 1311" in result.stdout


def test_outputs_that_do_not_pair_are_a_one_line_error_naming_the_output_map(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    original = qarep_model(BlockSpec())
    onnx.save(original, a)
    other = _renamed_outputs(qarep_model(BlockSpec()), ["1311"])
    other.graph.output.append(onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None))  # one output more
    onnx.save(other, b)
    result = cli("validate", "--provider", PROVIDER, a, b)
    assert result.returncode == 2 and "no output" in result.stderr and "--output-map" in result.stderr
    mapped = cli("validate", "--provider", PROVIDER, "--output-map", f"{original.graph.output[0].name}=1311", a, b)
    assert mapped.returncode == 0, mapped.stderr


# -- inputs that look like data -------------------------------------------------------------------------


def test_samples_take_turns_over_value_ranges():
    sets = random_input_sets(qarep_model(BlockSpec()), samples=3, seed=4)
    x = [s.feeds["x"] for s in sets]
    assert x[0].min() < 0 and 0 <= x[1].min() and x[1].max() < 1 and x[2].max() > 10
    assert [s.description.split(" (")[0] for s in sets] == ["random normal", "random [0, 1)", "random [0, 255)"]
    again = random_input_sets(qarep_model(BlockSpec()), samples=3, seed=4)
    assert all(np.array_equal(a.feeds["x"], b.feeds["x"]) for a, b in zip(sets, again))


def test_real_inputs_from_npz_and_npy(tmp_path):
    model, optimized = _folded()
    images = np.random.default_rng(1).uniform(0, 255, (1, 8, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    np.savez(tmp_path / "x.npz", x=images)
    for name in ("x.npy", "x.npz"):
        result = qarep_onnx.validate(model, optimized, provider=PROVIDER, inputs=[tmp_path / name])
        assert result.passed and result.samples == (f"file {name}",)
    onnx.save(model, tmp_path / "m.onnx")
    run = cli("optimize", "--validate", "--provider", PROVIDER, "--inputs", tmp_path / "x.npz", "--inputs", tmp_path / "x.npy",
              tmp_path / "m.onnx", tmp_path / "o.onnx")
    assert run.returncode == 0 and "2 input sets" in run.stdout, run.stderr


@pytest.mark.parametrize("arrays, says", [
    ({"y": np.zeros((1, 8, 8, 8), np.float32)}, "'y' is not an input"),
    ({"x": np.zeros((8, 8, 8), np.float32)}, "rank"),
    ({"x": np.zeros((1, 8, 8, 8), np.float64)}, "float64"),
    ({"x": np.zeros((1, 4, 8, 8), np.float32)}, "shape"),
    ({}, "missing"),
])
def test_an_input_file_that_does_not_fit_is_one_line(arrays, says, tmp_path):
    model, _ = _folded()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "bad.npz", **arrays)
    result = cli("optimize", "--validate", "--provider", PROVIDER, "--inputs", tmp_path / "bad.npz", tmp_path / "m.onnx",
                 tmp_path / "o.onnx")
    assert result.returncode == 2 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


# -- a verdict that measured nothing is no pass -------------------------------------------------------------


def _loop_block_model():
    """x -> Loop(trips){ QARepVGG block } with the trip count a graph input."""
    from onnx import TensorProto

    outer = GraphBuilder(seed=40)
    x = outer.input([1, 8, 8, 8])
    outer.inputs.append(helper.make_tensor_value_info("trips", TensorProto.INT64, []))
    outer.initializers.append(numpy_helper.from_array(np.array(True), "cond_true"))
    body = GraphBuilder(seed=41)
    from helpers.builders import qarep_block

    out = qarep_block(body, "state", BlockSpec(bn_3x3="separate", alpha="scalar"))
    body.nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    graph = helper.make_graph(
        body.nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 8, 8, 8])],
        body.initializers,
    )
    y = outer.op("Loop", ["trips", "cond_true", x], body=graph)
    return outer.model([y])


def test_a_loop_that_never_runs_proves_nothing(tmp_path):
    model = _loop_block_model()
    x = np.random.default_rng(2).standard_normal((1, 8, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "zero.npz", x=x, trips=np.array(0, np.int64))
    np.savez(tmp_path / "two.npz", x=x, trips=np.array(2, np.int64))
    with pytest.raises(qarep_onnx.ValidationError, match="proves nothing.*never reached"):
        qarep_onnx.optimize(model, validate=True, provider=PROVIDER, inputs=[tmp_path / "zero.npz"])
    result = qarep_onnx.optimize(model, validate=True, provider=PROVIDER, inputs=[tmp_path / "zero.npz", tmp_path / "two.npz"])
    assert result.report.validation.passed and result.report.blocks_folded == 1
    path = tmp_path / "loop.onnx"
    onnx.save(model, path)
    cli_run = cli("optimize", "--validate", "--provider", PROVIDER, "--inputs", tmp_path / "zero.npz", path, tmp_path / "o.onnx")
    assert cli_run.returncode == 4 and "INCONCLUSIVE" in cli_run.stdout and not (tmp_path / "o.onnx").exists()


def test_the_default_random_trip_count_reaches_the_loop():
    result = qarep_onnx.optimize(_loop_block_model(), validate=True, provider=PROVIDER)
    assert result.report.validation.passed


def test_a_branch_never_taken_proves_nothing(tmp_path):
    from helpers.builders import if_model

    model = if_model(read_branch_in_body=False)
    x = np.random.default_rng(3).standard_normal((1, 8, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "else.npz", x=x, cond=np.array(False))
    np.savez(tmp_path / "then.npz", x=x, cond=np.array(True))
    failed = qarep_onnx.optimize(model, provider=PROVIDER)  # folds in the main graph and in the then-branch
    assert failed.report.blocks_folded == 2
    with pytest.raises(qarep_onnx.ValidationError) as caught:
        qarep_onnx.optimize(model, validate=True, provider=PROVIDER, inputs=[tmp_path / "else.npz"])
    validation = caught.value.report.validation
    assert validation.status == "inconclusive" and len(validation.unproven) == 1 and "then_branch" in validation.unproven[0]
    both = qarep_onnx.optimize(model, validate=True, provider=PROVIDER, inputs=[tmp_path / "else.npz", tmp_path / "then.npz"])
    assert both.report.validation.passed


def test_empty_outputs_are_said_and_only_empty_outputs_prove_nothing():
    b = GraphBuilder(seed=5)
    x = b.input([1, 8, 8, 8])
    y = b.op("Add", [b.conv(x, 8, 8, 3), b.conv(x, 8, 8, 1, pad=0)])
    starts, ends, axes = b.const(np.array([0]), "s"), b.const(np.array([0]), "e"), b.const(np.array([1]), "a")
    for init in b.initializers[-3:]:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.int64), init.name))
    empty = b.op("Slice", [y, starts, ends, axes])
    both = b.model([empty, y])
    result = qarep_onnx.optimize(both, validate=True, provider=PROVIDER).report.validation
    assert result.passed and any("empty" in n for n in result.notes)
    only_empty = b.model([empty])
    with pytest.raises(qarep_onnx.ValidationError, match="empty"):
        qarep_onnx.optimize(only_empty, validate=True, provider=PROVIDER)


# -- the GPU path, as far as a machine without one can check it ----------------------------------------

import importlib.metadata  # noqa: E402
import re  # noqa: E402

from qarep_onnx.runtime import providers  # noqa: E402
from qarep_onnx.runtime.bench import compare  # noqa: E402


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.match(r"[0-9]+(\.[0-9]+)*", text).group(0).split("."))


def test_the_cuda_extra_names_extras_onnxruntime_gpu_declares():
    ours = importlib.metadata.distribution("qarep-onnx").requires or []
    (cuda,) = [r for r in ours if 'extra == "cuda"' in r]
    match = re.search(r"onnxruntime-gpu\[([^\]]+)\]>=([0-9.]+)", cuda)
    extras, bound = set(match.group(1).split(",")), _version(match.group(2))
    installed = importlib.metadata.distribution("onnxruntime-gpu")
    declared = set(installed.metadata.get_all("Provides-Extra") or [])
    assert extras == {"cuda", "cudnn"}
    # From the extra's bound on, onnxruntime-gpu declares them with CUDA 13 (CI's oldest run has an older one).
    if _version(installed.version) >= bound:
        assert extras <= declared
    assert not any("extra" not in r and "nvidia" in r for r in ours)  # the CPU install stays as it is


def test_preloading_gpu_libraries_is_guarded(monkeypatch):
    import onnxruntime as ort

    providers.preload_gpu_libraries.cache_clear()
    monkeypatch.delattr(ort, "preload_dlls", raising=False)
    assert providers.preload_gpu_libraries() is False  # an onnxruntime without it: skipped
    providers.preload_gpu_libraries.cache_clear()

    def broken(**kwargs):
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(ort, "preload_dlls", broken, raising=False)
    assert providers.preload_gpu_libraries() is False  # missing libraries: no exception, the probe says why
    providers.preload_gpu_libraries.cache_clear()
    calls = []
    monkeypatch.setattr(ort, "preload_dlls", lambda **kwargs: calls.append(kwargs), raising=False)
    assert providers.preload_gpu_libraries() is True and calls == [{"cuda": True, "cudnn": True, "msvc": False}]
    providers.preload_gpu_libraries.cache_clear()


def test_the_cuda_probe_says_in_one_line_what_to_install():
    providers.probe.cache_clear()
    reason = providers.probe("cuda")
    providers.probe.cache_clear()
    if reason is None:
        pytest.skip("CUDA works on this machine")
    assert "\n" not in reason and ("qarep-onnx[cuda]" in reason or "onnxruntime-gpu" in reason)


def test_validation_runs_on_cuda_without_tf32_and_with_a_fixed_algorithm_choice():
    choice = select_provider("cuda", probe=lambda name: None)
    (cuda, options), cpu = choice.session_providers
    assert cuda == "CUDAExecutionProvider" and options["use_tf32"] == "0" and cpu == "CPUExecutionProvider"
    assert options["cudnn_conv_algo_search"] == "DEFAULT"
    timing = choice.for_timing()
    assert timing.session_providers[0] == ("CUDAExecutionProvider", {})  # latency: the provider's defaults


def test_bench_through_io_binding_times_real_runs():
    model, optimized = _folded()
    choice = select_provider("cpu")
    bound = compare([model, optimized], choice, warmup=1, runs=5, io_binding=True)
    plain = compare([model, optimized], choice, warmup=1, runs=5, io_binding=False)
    assert all(l.runs == 5 and l.median_ms > 0 for l in bound + plain)
