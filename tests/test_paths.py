"""Every path the user names is checked before anything is written: no input, no input's data file and
no other output is ever replaced, devices and FIFOs are refused, symbolic links are written through."""

import os
import stat

import onnx
import pytest
from helpers.builders import BlockSpec, qarep_model
from helpers.checks import assert_same_function, cli, count


def _snapshot(folder):
    """Every file under ``folder``: its kind and bytes (links as their target's name)."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            state[path] = ("link", os.readlink(path))
        elif path.is_file():
            state[path] = ("file", path.read_bytes())
        else:
            state[path] = ("other", stat.S_IFMT(path.lstat().st_mode))
    return state


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "in.onnx"
    onnx.save(qarep_model(BlockSpec(channels_in=32, channels_out=32, alpha="scalar")), path)
    return path


@pytest.fixture
def external_model(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(qarep_model(BlockSpec(channels_in=32, channels_out=32)), path, save_as_external_data=True,
                    location="ext.weights", size_threshold=1024)
    return path


def _refused(tmp_path, *args, code=3, says=""):
    before = _snapshot(tmp_path)
    result = cli(*args)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qarep-onnx: error:") and says in lines[0], result.stderr
    assert _snapshot(tmp_path) == before  # nothing written, nothing replaced, no temporary file left
    return lines[0]


def test_json_cannot_be_the_input_or_the_output(model_path, tmp_path):
    out = tmp_path / "out.onnx"
    _refused(tmp_path, "optimize", "--json", model_path, model_path, out, says="is IN")
    _refused(tmp_path, "optimize", "--json", out, model_path, out, says="same file")
    _refused(tmp_path, "inspect", "--json", model_path, model_path, says="is MODEL")
    _refused(tmp_path, "validate", "--json", model_path, model_path, model_path, says="is ORIGINAL")


def test_json_through_another_name_of_the_input_is_refused(model_path, tmp_path):
    alias = tmp_path / "alias.onnx"
    os.link(model_path, alias)
    _refused(tmp_path, "inspect", "--json", alias, model_path, says="is MODEL")


def test_external_data_cannot_replace_an_input_file_or_the_output(external_model, tmp_path):
    out = tmp_path / "out.onnx"
    _refused(tmp_path, "optimize", "--external-data", "ext.weights", external_model, out, says="external data file")
    _refused(tmp_path, "optimize", "--external-data", "ext.onnx", external_model, out, says="is IN")
    _refused(tmp_path, "optimize", "--external-data", "out.onnx", external_model, out, says="same file")
    _refused(tmp_path, "optimize", "--external-data", "r.json", "--json", tmp_path / "r.json", external_model, out,
             says="same file")


def test_force_onto_the_input_never_overwrites_its_data_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(qarep_model(BlockSpec(channels_in=32, channels_out=32)), path, save_as_external_data=True,
                    location="m.onnx.data", size_threshold=1024)
    _refused(tmp_path, "optimize", "--force", path, path, says="external data file")
    result = cli("optimize", "--force", "--external-data", "m.folded.data", path, path)
    assert result.returncode == 0, result.stderr
    assert count(onnx.load(path), "Conv") == 1 and (tmp_path / "m.folded.data").is_file()


def test_a_fifo_or_a_device_is_not_replaced(model_path, tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    _refused(tmp_path, "optimize", model_path, fifo, says="FIFO")
    _refused(tmp_path, "optimize", "--json", fifo, model_path, tmp_path / "o.onnx", says="FIFO")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    result = cli("optimize", model_path, "/dev/null")
    assert result.returncode == 3 and "character device" in result.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_symbolic_link_is_written_through_and_said_so(model_path, tmp_path):
    target = tmp_path / "real" / "folded.onnx"
    target.parent.mkdir()
    link = tmp_path / "link.onnx"
    link.symlink_to(target)
    result = cli("optimize", model_path, link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert "symbolic link" in result.stdout and str(target) in result.stdout
    assert count(onnx.load(target), "Conv") == 1
    assert_same_function(onnx.load(model_path), onnx.load(link))


def test_a_symbolic_link_with_external_data_is_refused(model_path, tmp_path):
    link = tmp_path / "link.onnx"
    link.symlink_to(tmp_path / "target.onnx")
    _refused(tmp_path, "optimize", "--external-data", "", model_path, link, says="symbolic link")


def test_a_symbolic_link_to_the_input_is_the_input(model_path, tmp_path):
    link = tmp_path / "link.onnx"
    link.symlink_to(model_path)
    _refused(tmp_path, "optimize", model_path, link, says="is IN")


def test_json_into_a_missing_folder_writes_nothing(model_path, tmp_path):
    _refused(tmp_path, "optimize", "--json", tmp_path / "missing" / "r.json", model_path, tmp_path / "o.onnx",
             says="does not exist")


def test_json_written_atomically_and_through_links(model_path, tmp_path):
    report = tmp_path / "reports" / "r.json"
    report.parent.mkdir()
    report.write_text("old")
    link = tmp_path / "r.json"
    link.symlink_to(report)
    result = cli("inspect", "--json", link, model_path)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and report.read_text().startswith("{")
    assert sorted(p.name for p in report.parent.iterdir()) == ["r.json"]
