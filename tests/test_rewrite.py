"""The rewrite keeps everything it does not fold: model fields, untouched nodes, shared weights."""

import numpy as np
import onnx
import pytest
from helpers.builders import BlockSpec, GraphBuilder, if_model, qarep_block, qarep_model
from helpers.checks import assert_same_function, count
from onnx import helper, numpy_helper

import qarep_onnx
from qarep_onnx.runtime.sessions import run


def _decorated_model():
    b = GraphBuilder(seed=11)
    x = b.input([1, 8, 8, 8])
    stem = b.op("Relu", [b.conv(x, 8, 8, 3)])
    y = qarep_block(b, stem, BlockSpec(alpha="scalar", bn_3x3="separate"))
    head = b.op("Sigmoid", [b.conv(y, 8, 4, 1, pad=0)])
    model = b.model([head, y])
    model.producer_version = "9.9"
    model.domain = "ai.example"
    model.model_version = 7
    model.doc_string = "model doc"
    model.graph.doc_string = "graph doc"
    model.graph.node[0].doc_string = "stem doc"
    helper.set_model_props(model, {"author": "tests", "license": "MIT"})
    model.opset_import.append(helper.make_opsetid("ai.example", 1))
    return model


def test_model_fields_and_interface_are_kept():
    model = _decorated_model()
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        assert getattr(optimized, field) == getattr(model, field), field
    assert list(optimized.opset_import) == list(model.opset_import)
    assert list(optimized.metadata_props) == list(model.metadata_props)
    assert optimized.graph.name == model.graph.name and optimized.graph.doc_string == "graph doc"
    assert list(optimized.graph.input) == list(model.graph.input)
    assert list(optimized.graph.output) == list(model.graph.output)
    onnx.checker.check_model(optimized, full_check=True)
    run(optimized, {"x": np.zeros((1, 8, 8, 8), np.float32)}, optimize_graph=True)  # loads with default opts
    assert_same_function(model, optimized)


def test_untouched_nodes_and_initializers_are_byte_identical_and_in_order():
    model = _decorated_model()
    optimized, report = qarep_onnx.optimize(model)
    (fold,) = report.folds
    untouched = [n for n in model.graph.node if n.name not in fold.removed_nodes]
    kept = [n for n in optimized.graph.node if n.name != fold.node]
    assert [n.SerializeToString() for n in kept] == [n.SerializeToString() for n in untouched]
    used = {t for n in untouched for t in n.input}
    old_inits = [t.SerializeToString() for t in model.graph.initializer if t.name in used]
    new_inits = [t.SerializeToString() for t in optimized.graph.initializer if t.name in used]
    assert new_inits == old_inits and len(untouched) == 5  # stem Conv, Relu; block Relu; head Conv, Sigmoid


def test_input_model_is_not_modified():
    model = qarep_model(BlockSpec(alpha="scalar"))
    before = model.SerializeToString()
    qarep_onnx.optimize(model)
    assert model.SerializeToString() == before


def test_shared_initializers_are_never_modified():
    b = GraphBuilder(seed=12, constants="identity")
    x = b.input([1, 8, 8, 8])
    y3 = b.conv(x, 8, 8, 3)
    y1 = b.conv(x, 8, 8, 1, pad=0)
    shared_weight = b.nodes[-1].input[1]  # the 1x1 weight, an Identity of an initializer
    elsewhere = b.op("Conv", [b.op("Relu", [x]), shared_weight], kernel_shape=[1, 1])
    model = b.model([b.op("Relu", [b.op("Add", [b.op("Add", [y3, y1]), x])]), elsewhere])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1
    original = {t.name: t.SerializeToString() for t in model.graph.initializer}
    for t in optimized.graph.initializer:
        if t.name in original:
            assert t.SerializeToString() == original[t.name]
    assert any(n.output[0] == shared_weight for n in optimized.graph.node)  # alias still feeds the other conv
    assert_same_function(model, optimized)


def test_value_info_of_removed_tensors_is_dropped():
    model = onnx.shape_inference.infer_shapes(qarep_model(BlockSpec(alpha="scalar")))
    optimized, _ = qarep_onnx.optimize(model)
    produced = {o for n in optimized.graph.node for o in n.output}
    assert all(v.name in produced for v in optimized.graph.value_info)
    onnx.checker.check_model(optimized, full_check=True)


def _run_both(model, optimized):
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)}
    for flag in (True, False):
        feeds["cond"] = np.array(flag)
        expected, actual = run(model, feeds), run(optimized, feeds)
        for name in expected:
            np.testing.assert_allclose(actual[name], expected[name], atol=1e-5 * max(1, np.abs(expected[name]).max()))


def test_blocks_inside_if_bodies_are_folded():
    model = if_model(read_branch_in_body=False)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 2
    then_branch = next(a.g for a in optimized.graph.node[-1].attribute if a.name == "then_branch")
    assert [n.op_type for n in then_branch.node] == ["Conv", "Relu"]
    _run_both(model, optimized)


def test_a_tensor_read_by_a_subgraph_is_not_swallowed():
    model = if_model(read_branch_in_body=True)
    optimized, report = qarep_onnx.optimize(model)
    assert any(r.code == "FAN_OUT" for r in report.refusals)
    assert report.blocks_folded == 1  # only the block inside the body
    _run_both(model, optimized)


@pytest.mark.parametrize("keep_post_bn", [False, True])
def test_new_names_do_not_collide(keep_post_bn):
    model = qarep_model(BlockSpec())
    model.graph.node[-1].name = "x_folded"
    optimized, _ = qarep_onnx.optimize(model, keep_post_bn=keep_post_bn)
    names = [n.name for n in optimized.graph.node]
    assert len(names) == len(set(names))
    assert count(optimized, "Conv") == 1


def test_blocks_inside_model_local_functions_are_folded():
    b = GraphBuilder(seed=15, constants="constant")
    qarep_block(b, "fx", BlockSpec(alpha="scalar", bn_3x3="separate"))
    body_out = b.nodes[-1].output[0]
    function = helper.make_function(
        "example.blocks", "QARepBlock", ["fx"], [body_out], b.nodes, [helper.make_opsetid("", 17)]
    )
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 8, 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 8, 8])
    graph = helper.make_graph([helper.make_node("QARepBlock", ["x"], ["y"], domain="example.blocks")], "g", [x], [y])
    model = helper.make_model(
        graph, functions=[function],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.blocks", 1)],
    )
    model.ir_version = 8
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1
    assert [n.op_type for n in optimized.functions[0].node] == ["Constant", "Constant", "Conv", "Relu"]
    onnx.checker.check_model(optimized, full_check=True)
    assert_same_function(model, optimized)


def test_blocks_inside_loop_bodies_are_folded():
    outer = GraphBuilder(seed=16)
    x = outer.input([1, 8, 8, 8])
    body = GraphBuilder(seed=17)
    block_out = qarep_block(body, x, BlockSpec(alpha="scalar", bn_3x3="separate"))
    body.nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    body_graph = helper.make_graph(
        body.nodes, "body",
        [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info(block_out, onnx.TensorProto.FLOAT, None)],
        body.initializers,
    )
    outer.initializers.append(numpy_helper.from_array(np.array(2, np.int64), "trips"))
    outer.initializers.append(numpy_helper.from_array(np.array(True), "cond_true"))
    looped = outer.op("Loop", ["trips", "cond_true"], body=body_graph)
    model = outer.model([looped])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1 and report.folds[0].graph.endswith(".body")
    body_ops = [n.op_type for n in next(a.g for a in optimized.graph.node[-1].attribute).node]
    assert body_ops == ["Conv", "Relu", "Identity"]
    assert_same_function(model, optimized)
