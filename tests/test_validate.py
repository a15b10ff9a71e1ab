"""Validation and provider selection: mismatches are caught, inputs are generated, providers resolve."""

import numpy as np
import onnx
import pytest
from builders import BlockSpec, GraphBuilder, qarep_model
from onnx import helper, numpy_helper

import qarep_onnx
from qarep_onnx.providers import ProviderError, probe, select_provider
from qarep_onnx.inputs import random_input_sets


def _folded():
    model = qarep_model(BlockSpec(alpha="scalar", bn_3x3="separate"))
    return model, qarep_onnx.optimize(model).model


def test_a_correct_fold_passes_and_a_perturbed_weight_fails():
    model, optimized = _folded()
    assert qarep_onnx.validate(model, optimized, provider="cpu").passed
    weight = next(t for t in optimized.graph.initializer if t.name.endswith(".weight"))
    values = numpy_helper.to_array(weight).copy()
    values[0, 0, 1, 1] += 1e-3
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    result = qarep_onnx.validate(model, optimized, provider="cpu")
    assert not result.passed and result.worst.max_abs_error > 1e-4


def test_validate_accepts_paths(tmp_path):
    model, optimized = _folded()
    onnx.save(model, tmp_path / "a.onnx")
    onnx.save(optimized, tmp_path / "b.onnx")
    assert qarep_onnx.validate(tmp_path / "a.onnx", tmp_path / "b.onnx", provider="cpu").passed


def test_optimize_with_validate_raises_on_mismatch_and_reports_on_success():
    model, _ = _folded()
    result = qarep_onnx.optimize(model, validate=True, provider="cpu")
    assert result.report.validation.passed
    with pytest.raises(qarep_onnx.ValidationError, match="differs by"):
        qarep_onnx.optimize(model, validate=True, provider="cpu", rtol=0.0, atol=0.0)


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
    with pytest.raises(qarep_onnx.UsageError, match=r"'images'.*\['batch', 'h', 'w'\].*--input-shape"):
        random_input_sets(model)


def test_several_inputs_of_several_types_and_outputs_validate():
    model = _symbolic_model()
    feeds = random_input_sets(model, input_shapes={"images": (1, 8, 6, 6)})[0].feeds
    assert feeds["index"].dtype == np.int64 and set(np.unique(feeds["index"])) <= {0, 1}
    assert feeds["flag"].dtype == np.bool_
    result = qarep_onnx.optimize(model, validate=True, provider="cpu", input_shapes={"images": (1, 8, 6, 6)})
    assert result.report.blocks_folded == 1
    assert len(result.report.validation.outputs) == 3 and result.report.validation.passed


def test_provider_selection():
    assert select_provider("cpu").name == "cpu"
    assert select_provider("auto", probe=lambda name: None).name == "cuda"
    fallback = select_provider("auto", probe=lambda name: "no GPU here")
    assert fallback.name == "cpu" and "no GPU here" in fallback.note and "\n" not in fallback.note
    with pytest.raises(ProviderError, match="--provider cuda: no GPU here"):
        select_provider("cuda", probe=lambda name: "no GPU here")
    with pytest.raises(ProviderError, match="unknown provider"):
        select_provider("rocm")


def test_real_probe_answers_in_one_line():
    for name in ("cuda", "tensorrt"):
        reason = probe(name)
        assert reason is None or (reason and "\n" not in reason)


def test_non_finite_outputs_compare_sensibly():
    from qarep_onnx.validation import _max_error

    a = np.array([1.0, np.inf, np.nan, -np.inf])
    assert _max_error(a, a.copy()) == (0.0, 1.0)
    assert _max_error(a, np.array([1.0, np.inf, 0.0, -np.inf]))[0] == np.inf
    assert _max_error(a, np.array([1.5, np.inf, np.nan, np.inf]))[0] == np.inf
    assert _max_error(np.array([1.0, 2.0]), np.array([1.0, 2.5])) == (0.5, 2.0)
