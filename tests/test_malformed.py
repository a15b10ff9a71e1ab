"""Malformed variants of real nodes, bad options and odd models through the whole command line:
exit 2 (or the documented code) and one line, never exit 70 and never a traceback."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
from builders import BlockSpec, GraphBuilder, qarep_model
from onnx import TensorProto, helper, numpy_helper
from test_cli import cli


def _block():
    return qarep_model(BlockSpec(bn_3x3="separate", alpha="scalar"))


def _node(model, op_type):
    return next(n for n in model.graph.node if n.op_type == op_type)


def _init(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def _set_attribute(node, name, value):
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(name, value))


def _conv_one_input(m):
    del _node(m, "Conv").input[1:]


def _bn_three_inputs(m):
    del _node(m, "BatchNormalization").input[3:]


def _group(value):
    return lambda m: _set_attribute(_node(m, "Conv"), "group", value)


def _pads_as_int(m):
    _set_attribute(_node(m, "Conv"), "pads", 1)


def _epsilon_as_list(m):
    _set_attribute(_node(m, "BatchNormalization"), "epsilon", [1e-3, 1e-3])


def _short_raw_data(m):
    weight = _init(m, _node(m, "Conv").input[1])
    weight.raw_data = weight.raw_data[:10]


def _string_bn_parameter(m):
    gamma = _init(m, _node(m, "BatchNormalization").input[1])
    gamma.CopyFrom(helper.make_tensor(gamma.name, TensorProto.STRING, [8], [b"x"] * 8))


def _zero_input_channels(m):
    weight = _init(m, _node(m, "Conv").input[1])
    weight.CopyFrom(numpy_helper.from_array(np.zeros((8, 0, 3, 3), np.float32), weight.name))


def _bias_wrong_length(m):
    conv = next(n for n in m.graph.node if n.op_type == "Conv" and len(n.input) > 2)
    bias = _init(m, conv.input[2])
    bias.CopyFrom(numpy_helper.from_array(np.zeros(5, np.float32), bias.name))


def _kernel_shape_mismatch(m):
    _set_attribute(_node(m, "Conv"), "kernel_shape", [5, 5])


def _negative_stride(m):
    _set_attribute(_node(m, "Conv"), "strides", [-1, 1])


def _bad_auto_pad(m):
    _set_attribute(_node(m, "Conv"), "auto_pad", "SIDEWAYS")


def _bn_parameter_shapes_differ(m):
    var = _init(m, _node(m, "BatchNormalization").input[4])
    var.CopyFrom(numpy_helper.from_array(np.ones(5, np.float32), var.name))


MALFORMED = {
    "Conv with one input": _conv_one_input,
    "BatchNormalization with three inputs": _bn_three_inputs,
    "group 0": _group(0),
    "group -1": _group(-1),
    "group as a string": _group("two"),
    "group that does not divide the channels": _group(3),
    "pads as an int": _pads_as_int,
    "epsilon as a list": _epsilon_as_list,
    "weight raw_data shorter than its dims": _short_raw_data,
    "STRING BatchNorm parameter": _string_bn_parameter,
    "weight with 0 input channels": _zero_input_channels,
    "bias of the wrong length": _bias_wrong_length,
    "kernel_shape that is not the weight's": _kernel_shape_mismatch,
    "negative stride": _negative_stride,
    "unknown auto_pad": _bad_auto_pad,
    "BatchNorm parameters of different lengths": _bn_parameter_shapes_differ,
}


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
    weight = _init(model, _node(model, "Conv").input[1])
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
