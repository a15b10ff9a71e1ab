"""Hand-built ONNX graphs of re-parameterizable blocks, in every form exporters emit.

``GraphBuilder`` writes nodes and constants the way a chosen exporter would (initializers,
``Constant`` nodes, or ``Identity`` aliases of initializers); ``qarep_block`` writes one QARepVGG
block with every option of the block and of its export.  Tests and property tests build their
models from these, with random BatchNorm statistics so a wrong fold cannot look right.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSET = 17

_ELEM = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}


class GraphBuilder:
    def __init__(self, seed: int = 0, dtype=np.float32, constants: str = "initializer") -> None:
        self.rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.constants = constants  # "initializer", "constant" or "identity"
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._count = itertools.count()

    def name(self, prefix: str) -> str:
        return f"{prefix}_{next(self._count)}"

    def input(self, shape, name: str = "x") -> str:
        self.inputs.append(helper.make_tensor_value_info(name, _ELEM[self.dtype], list(shape)))
        return name

    def const(self, values, prefix: str = "c", how: str | None = None) -> str:
        array = np.asarray(values, dtype=self.dtype)
        how = how or self.constants
        name = self.name(prefix)
        if how == "constant":
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_v")))
        elif how == "identity":
            self.initializers.append(numpy_helper.from_array(array, name + "_init"))
            self.nodes.append(helper.make_node("Identity", [name + "_init"], [name], name=self.name("Identity")))
        else:
            self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values, prefix: str = "i") -> str:
        """An int64 initializer: a shape, axes, pads."""
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, pad=None, dilation=1, groups=1, bias=True, pads=None) -> str:
        k2 = (k, k) if isinstance(k, int) else tuple(k)
        w = self.rng.standard_normal((cout, cin // groups, *k2)) * 0.3
        inputs = [x, self.const(w, "w")]
        if bias:
            inputs.append(self.const(self.rng.standard_normal(cout) * 0.1, "b"))
        if pads is None:
            p = dilation * (k2[0] - 1) // 2 if pad is None else pad
            q = dilation * (k2[1] - 1) // 2 if pad is None else pad
            pads = [p, q, p, q]
        return self.op(
            "Conv", inputs, kernel_shape=list(k2), strides=[stride, stride], pads=list(pads),
            dilations=[dilation, dilation], group=groups,
        )

    def batch_norm(self, x, channels) -> str:
        r = self.rng
        params = [
            self.const(r.uniform(0.5, 1.5, channels), "gamma"),
            self.const(r.standard_normal(channels) * 0.2, "beta"),
            self.const(r.standard_normal(channels) * 0.2, "mean"),
            self.const(r.uniform(0.5, 1.5, channels), "var"),
        ]
        return self.op("BatchNormalization", [x, *params], epsilon=1e-3)

    def model(self, outputs: list[str], opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "g", self.inputs, [], self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
        model.ir_version = IR_VERSION
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v for v in inferred.graph.value_info}
        for o in outputs:  # outputs shape inference cannot type are declared without a shape
            model.graph.output.append(known.get(o) or helper.make_tensor_value_info(o, _ELEM[self.dtype], None))
        return model


@dataclass(frozen=True)
class BlockSpec:
    """One QARepVGG block and the shape of its export."""

    channels_in: int = 8
    channels_out: int = 8
    groups: int = 1
    stride: int = 1
    dilation: int = 1
    identity: bool = True
    post_bn: bool = True
    bias_1x1: bool = True
    alpha: str = "none"  # "none" (no Mul), "one" (Mul by 1.0), "scalar" ([1]), "channel" ([1,C,1,1])
    alpha_first: bool = False
    bn_3x3: str = "folded"  # "folded" into the conv's bias, or "separate" BatchNormalization node
    zero_add: bool = True  # without identity: an Add(., 0.0) as TorchScript leaves it
    add_order: tuple[int, ...] = (0, 1, 2)  # order of the 3x3, 1x1 and identity terms
    nesting: str = "left"  # "left", "right" or "sum"
    activation: str = "Relu"

    @property
    def has_identity(self) -> bool:
        return self.identity and self.channels_in == self.channels_out and self.stride == 1


def qarep_block(b: GraphBuilder, x: str, spec: BlockSpec) -> str:
    """Append one QARepVGG block reading ``x``; returns the block's output (after the activation)."""
    cin, cout, g = spec.channels_in, spec.channels_out, spec.groups
    y3 = b.conv(x, cin, cout, 3, spec.stride, dilation=spec.dilation, groups=g, bias=spec.bn_3x3 == "folded")
    if spec.bn_3x3 == "separate":
        y3 = b.batch_norm(y3, cout)
    y1 = b.conv(x, cin, cout, 1, spec.stride, pad=0, groups=g, bias=spec.bias_1x1)
    if spec.alpha != "none":
        if spec.alpha == "one":
            alpha = b.const(np.array(1.0), "one", how="constant")
        elif spec.alpha == "scalar":
            alpha = b.const(b.rng.uniform(0.5, 1.5, (1,)), "alpha")
        else:
            alpha = b.const(b.rng.uniform(0.5, 1.5, (1, cout, 1, 1)), "alpha")
        y1 = b.op("Mul", [alpha, y1] if spec.alpha_first else [y1, alpha])
    terms = [y3, y1]
    if spec.has_identity:
        terms.append(x)
    ordered = [terms[i] for i in spec.add_order if i < len(terms)]
    if spec.nesting == "sum":
        s = b.op("Sum", ordered)
    elif spec.nesting == "right":
        s = ordered[-1]
        for t in reversed(ordered[:-1]):
            s = b.op("Add", [t, s])
    else:
        s = ordered[0]
        for t in ordered[1:]:
            s = b.op("Add", [s, t])
    if not spec.has_identity and spec.zero_add:
        s = b.op("Add", [s, b.const(np.array(0.0), "zero", how="constant")])
    if spec.post_bn:
        s = b.batch_norm(s, cout)
    return b.op(spec.activation, [s]) if spec.activation else s


def qarep_model(spec: BlockSpec, seed: int = 0, dtype=np.float32, constants: str = "initializer", size: int = 8) -> onnx.ModelProto:
    b = GraphBuilder(seed, dtype, constants)
    x = b.input([1, spec.channels_in, size, size])
    return b.model([qarep_block(b, x, spec)])


# -- helpers for the property tests (tests/test_properties.py) ---------------------------------


class MixedConstantsBuilder(GraphBuilder):
    """A GraphBuilder whose constants take a random form each (initializer, Constant or Identity).

    The form is drawn from a second generator so the weights equal those of a plain builder with
    the same seed.
    """

    FORMS = ("initializer", "constant", "identity")

    def __init__(self, seed: int = 0, dtype=np.float32) -> None:
        super().__init__(seed, dtype, "initializer")
        self.form_rng = np.random.default_rng(seed + 1)

    def const(self, values, prefix: str = "c", how: str | None = None) -> str:
        return super().const(values, prefix, how or self.FORMS[int(self.form_rng.integers(len(self.FORMS)))])


def make_builder(seed: int = 0, dtype=np.float32, constants: str = "initializer") -> GraphBuilder:
    """A builder for ``constants`` = initializer, constant, identity or mixed."""
    if constants == "mixed":
        return MixedConstantsBuilder(seed, dtype)
    return GraphBuilder(seed, dtype, constants)


def qarep_chain_model(
    specs,
    seed: int = 0,
    dtype=np.float32,
    constants: str = "initializer",
    height: int = 8,
    width: int | None = None,
    batch: int = 1,
    stem: str = "",
    stem_channels: int = 3,
) -> onnx.ModelProto:
    """Blocks in sequence (``specs[i+1].channels_in == specs[i].channels_out``).

    ``stem`` puts a plain layer in front: "" none, "conv" (Conv 3x3 + Relu: one Conv that is no
    region), "conv_bn" (Conv 3x3 + BatchNormalization + Relu: one region that is not a block).
    """
    b = make_builder(seed, dtype, constants)
    width = height if width is None else width
    first = specs[0].channels_in
    if stem:
        x = b.input([batch, stem_channels, height, width])
        x = b.conv(x, stem_channels, first, 3, bias=True)
        if stem == "conv_bn":
            x = b.batch_norm(x, first)
        x = b.op("Relu", [x])
    else:
        x = b.input([batch, first, height, width])
    for spec in specs:
        x = qarep_block(b, x, spec)
    return b.model([x])


def if_model(read_branch_in_body: bool):
    """x -> [QARepVGG block] -> If(cond){then: body reading outer tensors; else: x}."""
    outer = GraphBuilder(seed=13)
    x = outer.input([1, 8, 8, 8])
    cond = "cond"
    outer.inputs.append(helper.make_tensor_value_info(cond, onnx.TensorProto.BOOL, []))
    y3 = outer.conv(x, 8, 8, 3)
    y1 = outer.conv(x, 8, 8, 1, pad=0)
    block_out = outer.op("Relu", [outer.op("Add", [outer.op("Add", [y3, y1]), x])])

    body = GraphBuilder(seed=14)
    inner = qarep_block(body, block_out, BlockSpec(alpha="scalar", bn_3x3="separate"))
    if read_branch_in_body:
        inner = body.op("Add", [inner, y3])
    then_graph = helper.make_graph(body.nodes, "then", [], [helper.make_tensor_value_info(inner, 1, None)], body.initializers)
    else_graph = helper.make_graph(
        [helper.make_node("Identity", [block_out], ["else_out"])], "else", [], [helper.make_tensor_value_info("else_out", 1, None)]
    )
    out = outer.op("If", [cond], then_branch=then_graph, else_branch=else_graph)
    return outer.model([out])
