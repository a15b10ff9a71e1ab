"""The op table, row by row: what each operator is read as, or the code of why it is none."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qarep_onnx.errors import Code, InputModelError, Reason
from qarep_onnx.fold import linear_ops
from qarep_onnx.fold.kinds.conv import ConvLeaf
from qarep_onnx.fold.kinds.conv_transpose import ConvTransposeLeaf
from qarep_onnx.fold.kinds.dense import DenseLeaf
from qarep_onnx.fold.ops import LEAF_OPS, OPS, TAKEN_OVER, Role, describe
from qarep_onnx.graph.index import GraphIndex

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)
CONSTANTS = {
    "w": RNG.standard_normal((4, 4, 3, 3)),  # a Conv weight; a ConvTranspose one too
    "b": RNG.standard_normal(4),
    "B": RNG.standard_normal((4, 6)),
    "B3": RNG.standard_normal((2, 4, 6)),
    "C_rows": RNG.standard_normal((5, 6)),
    "c": RNG.standard_normal((1, 4, 1, 1)),
    "g": RNG.uniform(0.5, 1.5, 4), "beta": RNG.standard_normal(4), "mean": RNG.standard_normal(4), "var": RNG.uniform(1, 2, 4),
    "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1]), "zero": np.array(0.0), "false": np.array(False),
}


def _described(op_type, inputs, domain="", outputs=("y",), **attributes):
    """``describe`` of one node reading the graph inputs ``x``, ``y2`` and the constants above."""
    node = helper.make_node(op_type, inputs, list(outputs), name="n", domain=domain, **attributes)
    initializers = [numpy_helper.from_array(np.asarray(v, np.float32 if v.dtype.kind == "f" else v.dtype), k)
                    for k, v in CONSTANTS.items()]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, F, None) for n in ("x", "x2")],
                              [helper.make_tensor_value_info(o, F, None) for o in outputs if o], initializers)
    return describe(node, GraphIndex(graph))


def _kind(described):
    if isinstance(described, Reason):
        return described.code
    if isinstance(described, linear_ops.ChannelAffine):
        return tuple(type(step).__name__ for step in described.steps)
    if isinstance(described, linear_ops.Sum):
        return ("Sum", tuple(c for _, c in described.terms))
    return type(described).__name__


ROWS = [
    ("Conv", ["x", "w", "b"], {}, "ConvLeaf"),
    ("Conv", ["x", "x2"], {}, Code.NON_CONSTANT),
    ("Conv", ["x", "w"], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, Code.AUTO_PAD),
    ("ConvTranspose", ["x", "w", "b"], {"strides": [2, 2]}, "ConvTransposeLeaf"),
    ("ConvTranspose", ["x", "w"], {"output_shape": [8, 8]}, Code.AUTO_PAD),
    ("Gemm", ["x", "B"], {}, "DenseLeaf"),
    ("Gemm", ["B", "x"], {}, Code.BLOCKING_OP),
    ("Gemm", ["B", "B"], {}, Code.CONSTANT_EXPRESSION),
    ("Gemm", ["x", "B", "C_rows"], {}, Code.NOT_PER_CHANNEL),
    ("MatMul", ["x", "B"], {}, "DenseLeaf"),
    ("MatMul", ["x", "B3"], {}, Code.BLOCKING_OP),
    ("MatMul", ["x", "x2"], {}, Code.NON_CONSTANT),
    ("BatchNormalization", ["x", "g", "beta", "mean", "var"], {}, ("BatchNorm",)),
    ("BatchNormalization", ["x", "g", "beta", "mean", "var"], {"training_mode": 1}, Code.BN_TRAINING),
    ("BatchNormalization", ["x", "g", "beta", "x2", "var"], {}, Code.NON_CONSTANT),
    ("Mul", ["x", "c"], {}, ("Scale",)),
    ("Mul", ["x", "x2"], {}, Code.NOT_LINEAR),
    ("Div", ["x", "c"], {}, ("Divide",)),
    ("Div", ["c", "x"], {}, Code.ENDS_BLOCK),
    ("Add", ["c", "x"], {}, ("Shift",)),
    ("Add", ["x", "x2"], {}, ("Sum", (1.0, 1.0))),
    ("Add", ["c", "c"], {}, Code.CONSTANT_EXPRESSION),
    ("Sub", ["x", "c"], {}, ("Shift",)),
    ("Sub", ["c", "x"], {}, ("Negate", "Shift")),
    ("Sub", ["x", "x2"], {}, ("Sum", (1.0, -1.0))),
    ("Sum", ["x", "x2", "x"], {}, ("Sum", (1.0, 1.0, 1.0))),
    ("Sum", ["x", "c"], {}, ("Shift",)),
    ("Sum", ["c", "c"], {}, Code.CONSTANT_EXPRESSION),
    ("Mean", ["x", "x2", "x"], {}, ("Sum", (1 / 3, 1 / 3, 1 / 3))),
    ("Mean", ["x", "c"], {}, ("Shift", "Scale")),
    ("Mean", ["c", "c"], {}, Code.CONSTANT_EXPRESSION),
    ("Neg", ["x"], {}, ("Negate",)),
    ("Identity", ["x"], {}, "Passthrough"),
    ("Dropout", ["x"], {}, "Passthrough"),
    ("Reshape", ["x", "pads"], {}, "Relayout"),
    ("Flatten", ["x"], {"axis": 1}, "Relayout"),
    ("Squeeze", ["x", "pads"], {}, "Relayout"),
    ("Unsqueeze", ["x", "pads"], {}, "Relayout"),
    ("Dropout", ["x", "", "x2"], {}, Code.NOT_LINEAR),
    ("AveragePool", ["x"], {"kernel_shape": [3, 3], "pads": [1] * 4, "count_include_pad": 1}, "AveragePool"),
    ("AveragePool", ["x"], {"kernel_shape": [3, 3], "pads": [1] * 4}, Code.POOL_EXCLUDES_PAD),
    ("AveragePool", ["x"], {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, Code.POOL_CEIL_MODE),
    ("Pad", ["x", "pads", "zero"], {}, "ZeroPad"),
    ("Pad", ["x", "pads"], {"mode": "reflect"}, Code.BLOCKING_OP),
    ("Pad", ["x", "x2"], {}, Code.BLOCKING_OP),
    ("Cast", ["x"], {"to": TensorProto.FLOAT16}, Code.BLOCKING_OP),
    ("QuantizeLinear", ["x", "zero"], {}, Code.BLOCKING_OP),
    ("DequantizeLinear", ["x", "zero"], {}, Code.BLOCKING_OP),
    ("Slice", ["x", "pads", "pads"], {}, Code.BLOCKING_OP),
    ("InstanceNormalization", ["x", "g", "beta"], {}, Code.ENDS_BLOCK),
    ("LayerNormalization", ["x", "g", "beta"], {}, Code.ENDS_BLOCK),
    ("GroupNormalization", ["x", "g", "beta"], {"num_groups": 2}, Code.ENDS_BLOCK),
    ("PRelu", ["x", "c"], {}, Code.ENDS_BLOCK),
    ("Relu", ["x"], {}, Code.ENDS_BLOCK),
]


@pytest.mark.parametrize("op_type, inputs, attributes, expected", ROWS, ids=lambda v: v if isinstance(v, str) else None)
def test_each_operator_is_read_as_its_rule_says(op_type, inputs, attributes, expected):
    assert _kind(_described(op_type, inputs, **attributes)) == expected


def test_every_operator_of_the_table_has_a_row():
    assert set(OPS) <= {row[0] for row in ROWS}


def test_an_operator_of_another_domain_blocks_a_block():
    assert _kind(_described("Conv", ["x", "w"], domain="com.example")) == Code.BLOCKING_OP


def test_a_leaf_is_described_by_the_kind_its_rule_names():
    leaves = {"Conv": ConvLeaf, "ConvTranspose": ConvTransposeLeaf, "Gemm": DenseLeaf, "MatMul": DenseLeaf}
    assert set(LEAF_OPS) == set(leaves)
    for op_type, leaf in leaves.items():
        assert leaf.kind is OPS[op_type].kind


def test_the_ops_a_second_pass_looks_for_are_derived_from_the_roles():
    roles = {Role.AFFINE, Role.SUM, Role.PASS, Role.LAYOUT, Role.PAD}
    assert TAKEN_OVER == {op for op, rule in OPS.items() if rule.role in roles}
    assert {"BatchNormalization", "Mul", "Add", "Sub", "Div", "Neg", "Sum", "Identity", "Dropout", "Pad"} <= TAKEN_OVER


def test_a_malformed_node_is_an_error_not_a_reason():
    with pytest.raises(InputModelError, match="not valid ONNX"):
        _described("Conv", ["x", "w", "B"])  # a bias of the wrong shape


def test_rows_are_built_on_a_valid_opset():
    assert onnx.defs.has("Conv") and all(onnx.defs.has(op) for op in OPS)
