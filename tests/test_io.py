"""Loading and saving: external data both ways, atomic writes, the model object left as it was."""

import os

import onnx
import pytest
from helpers.builders import BlockSpec, qarep_model
from helpers.checks import assert_same_function, cli, count
from helpers.fixtures import FIXTURES

import qarep_onnx
from qarep_onnx.io import read_model
from qarep_onnx.save import save_model


def _big_block():
    return qarep_model(BlockSpec(channels_in=32, channels_out=32, alpha="scalar", bn_3x3="separate"))


@pytest.fixture
def external_input(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(_big_block(), path, save_as_external_data=True, location="model.weights", size_threshold=1024)
    return path


def test_input_with_external_data_gives_output_with_external_data(external_input, tmp_path):
    out = tmp_path / "out.onnx"
    result = cli("optimize", "--validate", "--provider", "cpu", external_input, out)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.onnx.data").is_file() and "weights in out.onnx.data" in result.stdout
    stored = onnx.load(out, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    optimized = onnx.load(out)
    assert count(optimized, "Conv") == 1
    assert_same_function(onnx.load(external_input), optimized)


def test_external_data_on_request_with_a_chosen_location(tmp_path):
    source = tmp_path / "in.onnx"
    onnx.save(_big_block(), source)
    out = tmp_path / "out.onnx"
    result = cli("optimize", "--external-data", "weights/folded.bin", source, out)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "weights" / "folded.bin").is_file()
    assert_same_function(onnx.load(source), onnx.load(out))


def test_external_data_location_outside_the_output_folder_is_refused(tmp_path):
    source = tmp_path / "in.onnx"
    onnx.save(_big_block(), source)
    result = cli("optimize", "--external-data", "../escape.bin", source, tmp_path / "out.onnx")
    assert result.returncode == 3 and "inside the output folder" in result.stderr
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path.parent / "escape.bin").exists()


def test_read_model_reports_external_data(external_input):
    loaded = read_model(external_input)
    assert loaded.external_data and loaded.size_bytes > external_input.stat().st_size
    assert qarep_onnx.optimize(external_input).report.input_external_data


def test_saving_leaves_the_model_object_unchanged(tmp_path):
    model = _big_block()
    before = model.SerializeToString()
    save_model(model, tmp_path / "m.onnx", external_data=True)
    assert model.SerializeToString() == before


def test_interrupted_write_leaves_the_old_output_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous result")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_model(_big_block(), out, external_data=True)
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


@pytest.mark.parametrize("name", ["qarep_detector__dynamo.onnx", "net_fastvit_small__torchscript.onnx"])
def test_streamed_file_is_exactly_the_serialized_model(name, tmp_path):
    model = onnx.load(FIXTURES / "models" / name)
    onnx.helper.set_model_props(model, {"k": "v"})
    model.functions.add().CopyFrom(onnx.helper.make_function("d", "f", ["a"], ["b"], [onnx.helper.make_node("Relu", ["a"], ["b"])], []))
    save_model(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == model.SerializeToString()
