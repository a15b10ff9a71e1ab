"""Parameter count and an estimate of FLOPs, for the summary's before/after columns.

FLOPs need tensor shapes, so shape inference runs once, before folding, on a light copy of the
graph: initializers are declared as typed inputs instead of carried, which keeps this cheap on
large models.  Counted: each leaf operator (Conv, ConvTranspose, Gemm/MatMul) as 2 FLOPs per
multiply-accumulate, by its kind, and the other operators by the op table's FLOPs per output
element (2 for a BatchNormalization, 1 for Add/Sub/Mul/Div/Sum); other ops are left out.  Calls of model-local
functions are counted through an inlined copy.  The estimate is unknown (``None``) with symbolic
dimensions and no given shape, and when If/Loop/Scan bodies hold Conv, Gemm or MatMul nodes (what
they cost depends on the control flow).  Parameters are counted in every graph and function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import helper

from .fold.kinds.base import static
from .fold.ops import rule
from .graph.walk import scopes


@dataclass(frozen=True)
class ModelStats:
    parameters: int  # elements in initializers and Constant nodes, every graph and function included
    flops: int | None


def parameter_count(model: onnx.ModelProto) -> int:
    """Elements in the initializers of every graph and in the value of every Constant node."""
    total = 0
    for scope in scopes(model):
        total += sum(math.prod(t.dims) for t in scope.initializers)
        for node in scope.nodes:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                        total += math.prod(attr.t.dims)
    return total


def _control_flow_has_matrix_ops(model: onnx.ModelProto) -> bool:
    return any(rule(node.op_type).kind is not None for scope in scopes(model) if scope.in_body for node in scope.nodes)


def _inlined(model: onnx.ModelProto) -> onnx.ModelProto:
    if not model.functions:
        return model
    import onnx.inliner

    return onnx.inliner.inline_local_functions(model)


_INTEGER_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


def _shapes_something(tensor: onnx.TensorProto) -> bool:
    """A constant that may set a shape: a small integer tensor."""
    return tensor.data_type in _INTEGER_TYPES and math.prod(tensor.dims) <= 64


def _light_copy(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None) -> onnx.ModelProto:
    graph = model.graph
    inputs = []
    for value in graph.input:
        shape = (input_shapes or {}).get(value.name)
        if shape is not None:
            value = helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, list(shape))
        inputs.append(value)
    declared = {v.name for v in inputs}
    # Weights become typed inputs; small integer constants (a Reshape's shape, Unsqueeze's axes) stay, so
    # that inference knows the shapes they set.
    shaping = [t for t in graph.initializer if t.name not in declared and _shapes_something(t)]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in graph.initializer
               if t.name not in declared and not _shapes_something(t)]
    light = helper.make_graph(list(graph.node), graph.name, inputs, list(graph.output), shaping)
    copy = helper.make_model(light, opset_imports=list(model.opset_import), functions=list(model.functions))
    copy.ir_version = model.ir_version
    return copy


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    shapes = {}
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in dims)
    return shapes


def tensor_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict | None:
    """Inferred shapes of the main graph's tensors (``None`` for a dimension that is not static), or
    None when shape inference fails."""
    try:
        return _shapes(onnx.shape_inference.infer_shapes(_light_copy(model, input_shapes)))
    except Exception:  # shape inference rejects some valid models; then there is no estimate
        return None


def flop_estimate(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None) -> int | None:
    """FLOPs from tensor shapes (see :func:`tensor_shapes`); weights' shapes come from the model.

    A folded model keeps the names of every tensor that survives, so the shapes inferred before
    folding serve after it too; :func:`model_stats` infers them again when a fold wrote new ones.
    """
    if shapes is None:
        return None
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        op = rule(node.op_type)
        if op.kind is not None:
            if len(node.input) < 2:
                return None  # not a valid node: the fold says why
            flops = op.kind.flops(node, shapes, weights)
            if flops is None:
                return None
            total += flops
        elif op.flops_per_element and node.output:
            out = static(shapes.get(node.output[0]))
            total += op.flops_per_element * math.prod(out) if out is not None else 0
    return total


def model_stats(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None,
                input_shapes: dict[str, tuple[int, ...]] | None = None) -> ModelStats:
    """Parameters and FLOPs; ``shapes`` from :func:`tensor_shapes` of this model or of the one it was folded from."""
    if _control_flow_has_matrix_ops(model):
        flops = None
    elif model.functions:  # function bodies are counted through an inlined copy, with shapes of its own
        try:
            inlined = _inlined(model)
        except Exception:  # the inliner rejects some valid models: then there is no estimate
            inlined = None
        flops = flop_estimate(inlined, tensor_shapes(inlined, input_shapes)) if inlined is not None else None
    else:
        flops = flop_estimate(model, shapes)
        if flops is None and shapes is not None and _names_new_tensors(model, shapes):
            # A fold wrote tensors the shapes inferred before it do not know (a MatMul in front of its Add).
            flops = flop_estimate(model, tensor_shapes(model, input_shapes))
    return ModelStats(parameter_count(model), flops)


def _names_new_tensors(model: onnx.ModelProto, shapes: dict) -> bool:
    return any(o not in shapes for node in model.graph.node for o in node.output if o)
