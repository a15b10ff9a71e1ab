"""Move a one-input, one-output model into a model-local function, a Loop body or both branches of an If,
with no type or shape declared inside: where ranks are unknown to the fold."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _as_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The model's nodes with its initializers as Constant nodes in front (function bodies have none)."""
    constants = [helper.make_node("Constant", [], [t.name], value=t) for t in model.graph.initializer]
    return constants + list(model.graph.node)


def _elem(model: onnx.ModelProto) -> int:
    return model.graph.input[0].type.tensor_type.elem_type


def in_function(model: onnx.ModelProto) -> onnx.ModelProto:
    x, y = model.graph.input[0].name, model.graph.output[0].name
    function = helper.make_function("local", "Block", [x], [y], _as_nodes(model), [helper.make_opsetid("", OPSET)])
    graph = helper.make_graph([helper.make_node("Block", ["input"], ["output"], domain="local", name="call")], "g",
                              [_typed(model, "input")], [helper.make_tensor_value_info("output", _elem(model), None)])
    return _model(graph, [function])


def in_loop(model: onnx.ModelProto) -> onnx.ModelProto:
    """One trip of a Loop whose body reads the input from the enclosing graph and scans out the result."""
    x, y = model.graph.input[0].name, model.graph.output[0].name
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"])] + _as_nodes(model)
    body = helper.make_graph(
        nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info(y, _elem(model), None)],
    )
    trips, go = numpy_helper.from_array(np.array(1, np.int64), "trips"), numpy_helper.from_array(np.array(True), "go")
    outer = [helper.make_node("Identity", ["input"], [x]),
             helper.make_node("Loop", ["trips", "go"], ["output"], body=body, name="loop")]
    graph = helper.make_graph(outer, "g", [_typed(model, "input")], [helper.make_tensor_value_info("output", _elem(model), None)],
                              [trips, go])
    return _model(graph)


def in_if(model: onnx.ModelProto) -> onnx.ModelProto:
    """The region in both branches of an If on a condition given as an input."""
    x, y = model.graph.input[0].name, model.graph.output[0].name

    def branch(name: str) -> onnx.GraphProto:
        renamed = {y: f"{name}_out"}
        nodes = []
        for node in _as_nodes(model):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.output[:] = [renamed.get(o, o) for o in copy.output]
            nodes.append(copy)
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", _elem(model), None)])

    outer = [helper.make_node("Identity", ["input"], [x]),
             helper.make_node("If", ["cond"], ["output"], then_branch=branch("then"), else_branch=branch("else"), name="if")]
    graph = helper.make_graph(outer, "g", [_typed(model, "input"), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("output", _elem(model), None)])
    return _model(graph)


def _typed(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    value = onnx.ValueInfoProto()
    value.CopyFrom(model.graph.input[0])
    value.name = name
    return value


def _model(graph: onnx.GraphProto, functions=()) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("local", 1)] if functions else [])
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 8
    return model
