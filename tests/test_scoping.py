"""Names and scopes: what a tensor name means inside subgraphs and functions, invalid duplicate names,
IR-3 models, and what is cleaned up (or kept) in enclosing graphs and training_info."""

import numpy as np
import onnx
import pytest
from helpers.builders import BlockSpec, GraphBuilder, qarep_block
from helpers.checks import count
from onnx import TensorProto, helper, numpy_helper

import qarep_onnx
from qarep_onnx.runtime.sessions import run

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _x():
    return RNG.standard_normal((1, 8, 8, 8)).astype(np.float32)


def _assert_same_outputs(model, optimized, feeds):
    expected, actual = run(model, feeds), run(optimized, feeds)
    assert expected.keys() == actual.keys()
    for name, a in expected.items():
        assert np.asarray(a).size > 0
        np.testing.assert_allclose(actual[name], a, rtol=0, atol=1e-5 * max(1.0, float(np.abs(a).max())))


def _loop_model(body_nodes, body_inputs, body_outputs, body_initializers, outer_initializers, carried):
    """x -> Loop(trips, cond, *carried){body}; the outer graph also holds ``outer_initializers``."""
    outer = GraphBuilder(seed=21)
    x = outer.input([1, 8, 8, 8])
    outer.inputs.append(helper.make_tensor_value_info("trips", TensorProto.INT64, []))
    outer.initializers.extend(outer_initializers)
    outer.initializers.append(numpy_helper.from_array(np.array(True), "cond_true"))
    body = helper.make_graph(body_nodes, "body", body_inputs, body_outputs, body_initializers)
    outputs = ["loop_out"] + [f"loop_out_{k}" for k in range(1, len(carried))]
    outer.nodes.append(helper.make_node("Loop", ["trips", "cond_true", *carried], outputs, name="loop", body=body))
    del x
    return outer.model(outputs)


def _conv_mul_body(scale_name, weight_name="W"):
    """Body: out = Conv(state, W) * <scale_name>; carried state in, new state out."""
    nodes = [
        helper.make_node("Conv", ["state", weight_name], ["conv_out"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["conv_out", scale_name], ["new_state"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
               helper.make_tensor_value_info("new_state", F, [1, 8, 8, 8])]
    return nodes, outputs


def _weights(seed):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "W")


def test_a_loop_body_input_shadows_an_outer_initializer_of_the_same_name():
    nodes, outputs = _conv_mul_body("K")
    inputs = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
              helper.make_tensor_value_info("state", F, [1, 8, 8, 8]),
              helper.make_tensor_value_info("K", F, [1, 8, 8, 8])]
    nodes.append(helper.make_node("Identity", ["K"], ["K_out"]))
    outputs.append(helper.make_tensor_value_info("K_out", F, [1, 8, 8, 8]))
    outer_k = numpy_helper.from_array(np.full((1, 8, 1, 1), 3.0, np.float32), "K")
    model = _loop_model(nodes, inputs, outputs, [_weights(1)], [outer_k], ["x", "x"])
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 0, [f.output for f in report.folds]
    _assert_same_outputs(model, optimized, {"x": _x(), "trips": np.array(3, np.int64)})


@pytest.mark.parametrize("shadow", ["initializer", "node output"])
def test_a_body_initializer_or_node_output_shadows_an_outer_name(shadow):
    nodes, outputs = _conv_mul_body("K")
    inputs = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
              helper.make_tensor_value_info("state", F, [1, 8, 8, 8])]
    body_initializers = [_weights(2)]
    if shadow == "initializer":
        body_initializers.append(numpy_helper.from_array(np.full((1, 8, 1, 1), -0.5, np.float32), "K"))
    else:  # K computed in the body: not a constant although an outer constant is called K
        nodes.insert(0, helper.make_node("ReduceMean", ["state"], ["K"], axes=[2, 3], keepdims=1))
    outer_k = numpy_helper.from_array(np.full((1, 8, 1, 1), 3.0, np.float32), "K")
    model = _loop_model(nodes, inputs, outputs, body_initializers, [outer_k], ["x"])
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == (1 if shadow == "initializer" else 0)
    if shadow == "node output":
        return  # onnxruntime rejects a body node output that shadows an outer name; only the fold is checked
    _assert_same_outputs(model, optimized, {"x": _x(), "trips": np.array(2, np.int64)})
    if shadow == "initializer":  # the outer K is still read by nobody and stays as it was
        assert any(t.name == "K" for t in optimized.graph.initializer)


def test_a_nested_subgraph_reads_the_name_of_the_nearest_scope():
    """Loop body defines K (a body input); an If inside it reads K: the body's K, not the outer constant."""
    then_nodes = [helper.make_node("Conv", ["state", "W"], ["c"], pads=[1, 1, 1, 1]),
                  helper.make_node("Mul", ["c", "K"], ["then_out"])]
    then_graph = helper.make_graph(then_nodes, "then", [], [helper.make_tensor_value_info("then_out", F, None)])
    else_graph = helper.make_graph([helper.make_node("Identity", ["state"], ["else_out"])], "else", [],
                                   [helper.make_tensor_value_info("else_out", F, None)])
    nodes = [helper.make_node("If", ["cond_in"], ["new_state"], then_branch=then_graph, else_branch=else_graph),
             helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Identity", ["K"], ["K_out"])]
    inputs = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
              helper.make_tensor_value_info("state", F, [1, 8, 8, 8]),
              helper.make_tensor_value_info("K", F, [1, 8, 8, 8])]
    outputs = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
               helper.make_tensor_value_info("new_state", F, [1, 8, 8, 8]),
               helper.make_tensor_value_info("K_out", F, [1, 8, 8, 8])]
    outer_k = numpy_helper.from_array(np.full((1, 8, 1, 1), 3.0, np.float32), "K")
    model = _loop_model(nodes, inputs, outputs, [_weights(3)], [outer_k], ["x", "x"])
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 0
    _assert_same_outputs(model, optimized, {"x": _x(), "trips": np.array(2, np.int64)})


def test_an_outer_initializer_only_a_folded_body_block_read_is_removed():
    outer = GraphBuilder(seed=16)
    x = outer.input([1, 8, 8, 8])
    outer.initializers.append(numpy_helper.from_array(np.array(2, np.int64), "trips"))
    outer.initializers.append(numpy_helper.from_array(np.array(True), "cond_true"))
    shared = outer.const(np.full((1, 8, 1, 1), 0.5), "shared")  # read by the body block and by the outer graph
    only_body = outer.const(np.full((1, 8, 1, 1), 1.5), "only_body")
    body = GraphBuilder(seed=17)
    y = body.op("Mul", [qarep_block(body, x, BlockSpec(activation="")), only_body])
    y = body.op("Mul", [y, shared])
    body.nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    body_graph = helper.make_graph(
        body.nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info(y, F, None)],
        body.initializers,
    )
    looped = outer.op("Loop", ["trips", "cond_true"], body=body_graph)
    outer_use = outer.op("Mul", [x, shared])
    model = outer.model([looped, outer_use])
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1
    names = {t.name for t in optimized.graph.initializer}
    assert shared in names and only_body not in names
    onnx.checker.check_model(optimized, full_check=True)
    _assert_same_outputs(model, optimized, {"x": _x()})
    again, second = qarep_onnx.optimize(optimized)
    assert second.regions_folded == 0 and again.SerializeToString() == optimized.SerializeToString()


# -- model-local functions: attributes from the caller ---------------------------------------------


def _function_model(body_nodes, attributes, call_attributes):
    function = helper.make_function("ex", "Block", ["fx"], ["fy"], body_nodes, [helper.make_opsetid("", 17)],
                                    attributes=attributes)
    call = helper.make_node("Block", ["x"], ["y"], domain="ex", **call_attributes)
    graph = helper.make_graph([call], "g", [helper.make_tensor_value_info("x", F, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ex", 1)])
    model.ir_version = 8
    return model


def _weight_constant(name="w", seed=5):
    value = np.random.default_rng(seed).standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _ref(name, ref, kind):
    attr = onnx.AttributeProto(name=name, ref_attr_name=ref, type=kind)
    return attr


@pytest.mark.parametrize("form", ["value_float", "value"])
def test_a_function_constant_given_by_the_caller_is_not_a_constant(form):
    kind = onnx.AttributeProto.FLOAT if form == "value_float" else onnx.AttributeProto.TENSOR
    scale = helper.make_node("Constant", [], ["s"])
    scale.attribute.append(_ref(form, "scale", kind))
    nodes = [_weight_constant(), scale,
             helper.make_node("Conv", ["fx", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "s"], ["fy"])]
    value = 2.5 if form == "value_float" else numpy_helper.from_array(np.array(2.5, np.float32))
    model = _function_model(nodes, ["scale"], {"scale": value})
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 0
    _assert_same_outputs(model, optimized, {"x": _x()})


@pytest.mark.parametrize("node_attribute", ["strides", "group", "dilations", "pads", "epsilon"])
def test_a_fold_attribute_given_by_the_caller_refuses_the_fold(node_attribute):
    kinds = {"strides": onnx.AttributeProto.INTS, "group": onnx.AttributeProto.INT, "dilations": onnx.AttributeProto.INTS,
             "pads": onnx.AttributeProto.INTS, "epsilon": onnx.AttributeProto.FLOAT}
    values = {"strides": [1, 1], "group": 1, "dilations": [1, 1], "pads": [1, 1, 1, 1], "epsilon": 1e-3}
    conv = helper.make_node("Conv", ["fx", "w"], ["c"], **({} if node_attribute == "pads" else {"pads": [1, 1, 1, 1]}))
    bn_params = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(np.full(8, v, np.float32), n))
                 for n, v in (("g", 1.5), ("b", 0.1), ("m", 0.2), ("v", 0.9))]
    bn = helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["fy"])
    target = bn if node_attribute == "epsilon" else conv
    target.attribute.append(_ref(node_attribute, "outer", kinds[node_attribute]))
    model = _function_model([_weight_constant(), *bn_params, conv, bn], ["outer"], {"outer": values[node_attribute]})
    optimized, report = qarep_onnx.optimize(model)
    assert report.regions_folded == 0
    assert any(r.code == "NON_CONSTANT" and "caller" in r.message for r in report.refusals) or node_attribute == "epsilon"
    _assert_same_outputs(model, optimized, {"x": _x()})


# -- invalid names ----------------------------------------------------------------------------------


def _duplicate_model(where):
    b = GraphBuilder(seed=3)
    x = b.input([1, 8, 8, 8])
    y = qarep_block(b, x, BlockSpec(activation=""))
    model = b.model([y])
    if where == "initializer":
        copy = onnx.TensorProto()
        copy.CopyFrom(model.graph.initializer[0])
        copy.raw_data = (np.frombuffer(copy.raw_data, np.float32) * 2).tobytes()
        model.graph.initializer.append(copy)
    elif where == "node output":
        model.graph.node.append(helper.make_node("Relu", [x], [model.graph.node[0].output[0]]))
    elif where == "node output over an initializer":
        model.graph.node.append(helper.make_node("Relu", [x], [model.graph.initializer[0].name]))
    return model


@pytest.mark.parametrize("where", ["initializer", "node output", "node output over an initializer"])
def test_a_name_defined_twice_is_rejected(where, tmp_path):
    model = _duplicate_model(where)
    with pytest.raises(qarep_onnx.InputModelError, match="not valid ONNX"):
        qarep_onnx.optimize(model)
    path = tmp_path / "dup.onnx"
    path.write_bytes(model.SerializeToString())
    from helpers.checks import cli

    result = cli("optimize", path, tmp_path / "out.onnx")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()


def test_a_duplicate_initializer_inside_a_subgraph_is_rejected():
    dup = _duplicate_model("initializer")
    then_graph = helper.make_graph(list(dup.graph.node), "then", [], list(dup.graph.output), list(dup.graph.initializer))
    else_graph = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", F, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph)], "g",
        [helper.make_tensor_value_info("x", F, [1, 8, 8, 8]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", F, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(qarep_onnx.InputModelError, match="subgraph"):
        qarep_onnx.optimize(model)


# -- IR version 3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("constants", ["constant", "initializer"])
def test_ir3_models_stay_valid(constants):
    b = GraphBuilder(seed=8, constants=constants)
    x = b.input([1, 8, 8, 8])
    y = qarep_block(b, x, BlockSpec(bn_3x3="separate", alpha="scalar"))
    model = b.model([y], opset=8)
    model.ir_version = 3
    for init in model.graph.initializer:  # IR 3: every initializer is a graph input
        model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    onnx.checker.check_model(model, full_check=True)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 1 and count(optimized, "Conv") == 1
    onnx.checker.check_model(optimized, full_check=True)
    initializers = {t.name for t in optimized.graph.initializer}
    assert {i.name for i in optimized.graph.input} == initializers | {"x"}
    _assert_same_outputs(model, optimized, {"x": _x()})


# -- value_info and training_info -------------------------------------------------------------------


def test_value_info_of_removed_initializers_and_constants_is_dropped():
    b = GraphBuilder(seed=4, constants="constant")
    x = b.input([1, 8, 8, 8])
    model = b.model([qarep_block(b, x, BlockSpec(alpha="scalar"))])
    model = onnx.shape_inference.infer_shapes(model)
    for init in [helper.make_tensor_value_info(n.output[0], F, None) for n in model.graph.node if n.op_type == "Constant"]:
        model.graph.value_info.append(init)
    optimized, _ = qarep_onnx.optimize(model)
    defined = {o for n in optimized.graph.node for o in n.output} | {t.name for t in optimized.graph.initializer}
    assert all(v.name in defined for v in optimized.graph.value_info)
    onnx.checker.check_model(optimized, full_check=True)


def test_weights_the_training_info_updates_are_not_folded_and_stay():
    b = GraphBuilder(seed=6)
    x = b.input([1, 8, 8, 8])
    model = b.model([qarep_block(b, x, BlockSpec(bn_3x3="separate"))])
    weight = next(n for n in model.graph.node if n.op_type == "Conv").input[1]
    algorithm = helper.make_graph([helper.make_node("Neg", [weight], ["w_next"])], "step", [],
                                  [helper.make_tensor_value_info("w_next", F, None)])
    info = onnx.TrainingInfoProto()
    info.algorithm.CopyFrom(algorithm)
    binding = info.update_binding.add()
    binding.key, binding.value = weight, "w_next"
    model.training_info.append(info)
    optimized, report = qarep_onnx.optimize(model)
    assert report.blocks_folded == 0 and any(r.code == "NON_CONSTANT" and "training_info" in r.message for r in report.refusals)
    assert weight in {t.name for t in optimized.graph.initializer}
    onnx.checker.check_model(optimized)
