"""Malformed variants of real nodes, bad options and odd models through the whole command line:
exit 2 (or the documented code) and one line, never exit 70 and never a traceback."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers.builders import BlockSpec, GraphBuilder, qarep_model
from helpers.checks import cli
from helpers.malformed import MALFORMED, initializer_of, node_of
from onnx import TensorProto, helper, numpy_helper


def _block():
    return qarep_model(BlockSpec(bn_3x3="separate", alpha="scalar"))


def _one_error_line(result, code):
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qarep-onnx: error:"), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_node_is_exit_2_and_one_line(case, tmp_path):
    model = _block()
    MALFORMED[case](model)
    path = tmp_path / "bad.onnx"
    path.write_bytes(model.SerializeToString())
    before = path.read_bytes()
    for command in (("optimize", path, tmp_path / "out.onnx"), ("inspect", path)):
        line = _one_error_line(cli(*command), 2)
        assert "not valid ONNX" in line or "cannot be read" in line
    assert path.read_bytes() == before and not (tmp_path / "out.onnx").exists()


def _with_external_weight(tmp_path, info):
    model = _block()
    weight = initializer_of(model, node_of(model, "Conv").input[1])
    data = weight.raw_data
    (tmp_path / "w.bin").write_bytes(data)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "w.bin", "offset": "0", "length": str(len(data)), **info}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("info", [{"offset": "abc"}, {"offset": "-5"}, {"length": "many"}, {"location": "w\0.bin"}])
def test_broken_external_data_fields_are_exit_2(info, tmp_path):
    path = _with_external_weight(tmp_path, info)
    _one_error_line(cli("optimize", path, tmp_path / "out.onnx"), 2)
    assert not (tmp_path / "out.onnx").exists()


def _symbolic_block():
    b = GraphBuilder(seed=2)
    b.inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, "h", "w"]))
    y = b.op("Add", [b.conv("x", 8, 8, 3), b.conv("x", 8, 8, 1, pad=0)])
    return b.model([y])


@pytest.mark.parametrize("args, says", [
    (("--input-shape", "x:100000x8x10000x10000"), "GiB"),
    (("--input-shape", "x:1x8x8"), "rank"),
    (("--input-shape", "x:1x4x8x8"), "contradicts"),
    (("--input-shape", "y:1x8x8x8"), "not an input"),
    ((), "symbolic dimensions"),
])
def test_bad_input_shapes_are_exit_2(args, says, tmp_path):
    path = tmp_path / "sym.onnx"
    onnx.save(_symbolic_block(), path)
    line = _one_error_line(cli("optimize", "--validate", "--provider", "cpu", *args, path, tmp_path / "o.onnx"), 2)
    assert says in line
    assert not (tmp_path / "o.onnx").exists()


def test_an_input_without_a_shape_needs_one_and_then_validates(tmp_path):
    model = _block()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    path = tmp_path / "noshape.onnx"
    onnx.save(model, path)
    line = _one_error_line(cli("optimize", "--validate", "--provider", "cpu", path, tmp_path / "o.onnx"), 2)
    assert "declares no shape" in line
    ok = cli("optimize", "--validate", "--provider", "cpu", "--input-shape", "x:1x8x8x8", path, tmp_path / "o.onnx")
    assert ok.returncode == 0, ok.stderr


def test_a_tensor_sequence_output_is_compared(tmp_path):
    b = GraphBuilder(seed=3)
    x = b.input([1, 8, 8, 8])
    y = b.op("Add", [b.conv(x, 8, 8, 3), b.conv(x, 8, 8, 1, pad=0)])
    seq = b.op("SequenceConstruct", [y, x])
    model = b.model([])
    model.graph.output.append(helper.make_tensor_sequence_value_info(seq, TensorProto.FLOAT, None))
    path = tmp_path / "seq.onnx"
    onnx.save(model, path)
    result = cli("optimize", "--validate", "--provider", "cpu", path, tmp_path / "o.onnx")
    assert result.returncode == 0, result.stderr
    assert "validation passed" in result.stdout


@pytest.mark.parametrize("args", [("--seed", "-1"), ("--rtol", "-1"), ("--atol", "inf"), ("--rtol", "nan"), ("--samples", "0")])
def test_bad_numbers_are_usage_errors(args, tmp_path):
    path = tmp_path / "in.onnx"
    onnx.save(_block(), path)
    result = cli("optimize", "--validate", *args, path, tmp_path / "o.onnx")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_bench_of_models_with_different_inputs_is_exit_2(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(_block(), a)
    onnx.save(qarep_model(BlockSpec(), size=6), b)
    other = onnx.load(b)
    other.graph.input[0].type.tensor_type.shape.dim.pop()
    onnx.save(other, b)
    line = _one_error_line(cli("bench", "--provider", "cpu", "--runs", "1", a, b), 2)
    assert "input 'x'" in line


def test_an_unusable_provider_is_refused_without_validate_too(tmp_path):
    path = tmp_path / "in.onnx"
    onnx.save(_block(), path)
    result = cli("optimize", "--provider", "tensorrt", path, tmp_path / "o.onnx")
    if result.returncode == 0:
        pytest.skip("TensorRT works on this machine")
    _one_error_line(result, 5)
    assert not (tmp_path / "o.onnx").exists()


def test_ctrl_c_during_start_up_is_one_line():
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def interrupted(name, *args, **kwargs):\n"
        "    if name in ('cli', 'cli.main', 'qarep_onnx.cli') or (args and args[2] and 'main' in (args[2] or ()) and name == 'cli'):\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted\n"
        "from qarep_onnx.console import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, "optimize", "a", "b"], capture_output=True, text=True)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == "qarep-onnx: interrupted; no output written"


# -- valid models of types the fold does not compute in: left alone, exit 0 --------------------------------


def _integer_product(op_type: str, elem_type: int):
    np_type = helper.tensor_dtype_to_np_dtype(elem_type)
    x = helper.make_tensor_value_info("x", elem_type, [2, 3])
    y = helper.make_tensor_value_info("y", elem_type, [2, 4])
    w = numpy_helper.from_array(np.arange(12, dtype=np_type).reshape(3, 4), "w")
    c = numpy_helper.from_array(np.arange(4, dtype=np_type), "c")
    node = helper.make_node(op_type, ["x", "w"] + (["c"] if op_type == "Gemm" else []), ["p"])
    add = helper.make_node("Add", ["p", "c"], ["y"])
    model = helper.make_model(helper.make_graph([node, add], "g", [x], [y], [w, c]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("op_type", ["MatMul", "Gemm"])
@pytest.mark.parametrize("elem_type", [TensorProto.INT32, TensorProto.INT64])
def test_an_integer_product_is_valid_and_left_alone(op_type, elem_type, tmp_path):
    model = _integer_product(op_type, elem_type)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "int.onnx"
    onnx.save(model, path)
    # onnxruntime runs integer MatMuls, not integer Gemms: only the former can be validated.
    validate = ["--validate", "--provider", "cpu"] if op_type == "MatMul" else []
    result = cli("optimize", *validate, path, tmp_path / "out.onnx")
    assert result.returncode == 0, result.stderr
    assert onnx.load(tmp_path / "out.onnx").graph.SerializeToString() == model.graph.SerializeToString()


def test_a_batch_norm_15_with_bfloat16_parameters_is_valid_and_left_alone(tmp_path):
    b = GraphBuilder(seed=81)
    x = b.input([1, 4, 6, 6])
    model = b.model([b.batch_norm(b.conv(x, 4, 4, 3), 4)], opset=15)
    norm = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    for name in norm.input[1:3]:  # scale and bias in bfloat16 (T1), mean and var stay float (T2)
        tensor = next(t for t in model.graph.initializer if t.name == name)
        values = numpy_helper.to_array(tensor)
        tensor.CopyFrom(helper.make_tensor(name, TensorProto.BFLOAT16, values.shape, values.reshape(-1).tolist()))
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "bf16.onnx"
    onnx.save(model, path)
    result = cli("inspect", path)
    assert result.returncode == 0, result.stderr
    assert "DTYPE" in result.stdout and "bfloat16" in result.stdout
