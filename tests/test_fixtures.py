"""Every bundled fixture (exported from PyTorch by fixtures/generate.py) folds as its manifest says.

For each export: the folded block count and the Conv count of the natively reparameterized export
match, the numbers match the original run with ORT_DISABLE_ALL, a second run changes nothing, and
--keep-post-bn keeps exactly the BatchNorms after the blocks' sums.
"""

import functools

import onnx
import pytest
from helpers.checks import assert_same_function, count
from helpers.fixtures import FIXTURES, MANIFEST, WITH_NATIVE, WITH_REFUSAL

import qarep_onnx


def _id(entry):
    return f"{entry['name']}-{entry['exporter']}"


@functools.cache
def _optimized(file: str):
    model = onnx.load(FIXTURES / file)
    optimized, report = qarep_onnx.optimize(model)
    return model, optimized, report


def test_manifest_covers_both_exporters_and_the_detector():
    exporters = {e["exporter"] for e in MANIFEST}
    assert {"torchscript", "torchscript_nofold", "dynamo"} <= exporters
    assert any(e["kind"] == "detector" for e in MANIFEST)


@pytest.mark.parametrize("entry", MANIFEST, ids=_id)
def test_folds_as_many_blocks_as_expected(entry):
    _, _, report = _optimized(entry["file"])
    assert report.blocks_folded == entry["expected_blocks"], [r.message for r in report.refusals]


@pytest.mark.parametrize("entry", WITH_NATIVE, ids=_id)
def test_conv_count_equals_the_native_export(entry):
    _, optimized, _ = _optimized(entry["file"])
    assert count(optimized, "Conv") == entry["native_conv_count"]


@pytest.mark.parametrize("entry", MANIFEST, ids=_id)
def test_output_matches_the_original(entry):
    model, optimized, _ = _optimized(entry["file"])
    assert_same_function(model, optimized)


@pytest.mark.parametrize("entry", MANIFEST, ids=_id)
def test_output_passes_the_checker(entry):
    model, optimized, _ = _optimized(entry["file"])
    onnx.checker.check_model(model, full_check=True)
    onnx.checker.check_model(optimized, full_check=True)


@pytest.mark.parametrize("entry", MANIFEST, ids=_id)
def test_second_run_changes_nothing(entry):
    _, optimized, _ = _optimized(entry["file"])
    again, report = qarep_onnx.optimize(optimized)
    assert report.regions_folded == 0
    assert again.SerializeToString() == optimized.SerializeToString()


@pytest.mark.parametrize("entry", WITH_REFUSAL, ids=_id)
def test_expected_refusal_is_reported(entry):
    _, _, report = _optimized(entry["file"])
    assert entry["expected_refusal"] in {r.code for r in report.refusals}


@pytest.mark.parametrize("entry", [e for e in MANIFEST if e["kind"] != "negative"], ids=_id)
def test_keep_post_bn(entry):
    model = onnx.load(FIXTURES / entry["file"])
    fully, _ = qarep_onnx.optimize(model)
    optimized, report = qarep_onnx.optimize(model, keep_post_bn=True)
    assert report.blocks_folded == entry["expected_blocks"]
    kept = count(optimized, "BatchNormalization") - count(fully, "BatchNormalization")
    # Kept: the BatchNorm after each block's sum, and the one ending each plain Conv -> BN chain.
    producer = {o: n for n in model.graph.node for o in n.output}
    _, _, full_report = _optimized(entry["file"])
    chains = sum(f.branches == 1 and producer[f.output].op_type == "BatchNormalization" for f in full_report.folds)
    assert kept == entry["expected_post_bn"] + chains
    again, second = qarep_onnx.optimize(optimized, keep_post_bn=True)
    assert second.regions_folded == 0 and again.SerializeToString() == optimized.SerializeToString()
    if entry["native_file"] is not None:
        assert count(optimized, "Conv") == entry["native_conv_count"]
    assert_same_function(model, optimized)


# Operators a fold replaces one for one: the optimized model has as many as the native export.
SAME_COUNT = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Operators a fold removes: never more than the native export keeps (partial-fusion and TorchScript
# nofold natives keep BatchNorms; a GELU's constant factor folds into the next Conv here).
AT_MOST = ("BatchNormalization", "Add", "Sub", "Mul", "Div", "Pad")


@pytest.mark.parametrize("entry", WITH_NATIVE, ids=_id)
def test_node_counts_reach_the_native_export(entry):
    _, optimized, _ = _optimized(entry["file"])
    native = entry["native_op_counts"]
    for op in SAME_COUNT:
        assert count(optimized, op) == native.get(op, 0), op
    for op in AT_MOST:
        assert count(optimized, op) <= native.get(op, 0), op
