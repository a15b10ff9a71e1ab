"""Malformed variants of real nodes: each edit makes a valid model invalid ONNX in one way."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def node_of(model, op_type):
    return next(n for n in model.graph.node if n.op_type == op_type)


def initializer_of(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def _set_attribute(node, name, value):
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(name, value))


def _conv_one_input(m):
    del node_of(m, "Conv").input[1:]


def _bn_three_inputs(m):
    del node_of(m, "BatchNormalization").input[3:]


def _group(value):
    return lambda m: _set_attribute(node_of(m, "Conv"), "group", value)


def _pads_as_int(m):
    _set_attribute(node_of(m, "Conv"), "pads", 1)


def _epsilon_as_list(m):
    _set_attribute(node_of(m, "BatchNormalization"), "epsilon", [1e-3, 1e-3])


def _short_raw_data(m):
    weight = initializer_of(m, node_of(m, "Conv").input[1])
    weight.raw_data = weight.raw_data[:10]


def _string_bn_parameter(m):
    gamma = initializer_of(m, node_of(m, "BatchNormalization").input[1])
    gamma.CopyFrom(helper.make_tensor(gamma.name, TensorProto.STRING, [8], [b"x"] * 8))


def _zero_input_channels(m):
    weight = initializer_of(m, node_of(m, "Conv").input[1])
    weight.CopyFrom(numpy_helper.from_array(np.zeros((8, 0, 3, 3), np.float32), weight.name))


def _bias_wrong_length(m):
    conv = next(n for n in m.graph.node if n.op_type == "Conv" and len(n.input) > 2)
    bias = initializer_of(m, conv.input[2])
    bias.CopyFrom(numpy_helper.from_array(np.zeros(5, np.float32), bias.name))


def _kernel_shape_mismatch(m):
    _set_attribute(node_of(m, "Conv"), "kernel_shape", [5, 5])


def _negative_stride(m):
    _set_attribute(node_of(m, "Conv"), "strides", [-1, 1])


def _bad_auto_pad(m):
    _set_attribute(node_of(m, "Conv"), "auto_pad", "SIDEWAYS")


def _bn_parameter_shapes_differ(m):
    var = initializer_of(m, node_of(m, "BatchNormalization").input[4])
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
