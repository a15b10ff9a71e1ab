"""A working copy the Q/DQ writer and the measurements can take as it is; the input model is never touched.

The copy gets:

* opset 13 or later in the default domain: per-axis QuantizeLinear/DequantizeLinear (one scale per
  output channel) exists from opset 13.  An older model is converted with onnx's version converter,
  or refused in one line when that fails;
* the ``Constant`` nodes and ``Identity`` aliases that feed a layer's weight or bias replaced by
  initializers (TorchScript exports shared weights through ``Identity``), so that every layer's
  weight is a constant the writer can quantize;
* a Gemm's ``beta`` folded into its constant ``C`` (one bias to carry through equalization);
* a unique name for every node (an unnamed node gets ``<op>_<index>``; a repeated name gets a
  ``_<k>`` suffix), since layers are excluded by name and Q/DQ pairs are placed by consumer;
* inferred shapes and types (the calibration session declares the tensors it reads with them).

Only float32 models go end to end: a float16 or float64 model is refused with one line by
:func:`float32_reason` (the weight report still covers it).  TensorRT builds FP16 kernels for the
layers left in float from a float32 Q/DQ model when asked (``--fp16``), so exporting in float32 loses
nothing.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from ..errors import UsageError
from ..graph.attributes import float_attribute
from ..graph.tensors import tensor_values, type_name
from ..graph.walk import NameAllocator, remove_unread
from ..runtime.noise import model_float_type
from .layers import LAYER_OPS

MIN_OPSET = 13


def float32_reason(model: onnx.ModelProto) -> str | None:
    """None for a float32 model, else why it cannot be quantized here (one line)."""
    kind = model_float_type(model)
    if kind == onnx.TensorProto.FLOAT:
        return None
    return (
        f"the model computes in {type_name(kind)}; INT8 Q/DQ models are built here from float32 models only: "
        "export it in float32 (TensorRT still runs the layers left in float in FP16 with --fp16)"
    )


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _with_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    version = default_opset(model)
    if version >= MIN_OPSET:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        converted = onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises its own types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            f"the model uses opset {version}; per-channel Q/DQ needs opset {MIN_OPSET} or later and onnx's version "
            f"converter failed ({detail[:160]}); re-export with opset {MIN_OPSET} or later"
        ) from exc
    converted.ir_version = max(model.ir_version, 7)  # opset 13 needs IR 7; never raise it further
    return converted


def _unique_names(graph: onnx.GraphProto) -> None:
    """Every node named, once: an unnamed node becomes ``<op>_<index>``, a repeated name gets ``_2``, ``_3``, ..."""
    names = NameAllocator({n.name for n in graph.node if n.name})
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = names.fresh(node.name or f"{node.op_type}_{index}")
        seen.add(node.name)


def _constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attr.t)
            return tensor
    return None


def _resolve_weight_aliases(graph: onnx.GraphProto) -> None:
    """Point every layer's weight and bias input at an initializer when it is a Constant or an Identity of one."""
    initializers = {t.name for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    producer = {out: node for node in graph.node for out in node.output}

    def source(name: str, depth: int = 0) -> str | None:
        if name in initializers and name not in graph_inputs:
            return name
        node = producer.get(name)
        if node is None or depth > 64:
            return None
        if node.op_type == "Identity" and node.input:
            return source(node.input[0], depth + 1)
        if node.op_type == "Constant":
            tensor = _constant_value(node)
            if tensor is None:
                return None
            tensor.name = name
            graph.initializer.append(tensor)
            initializers.add(name)
            graph.node.remove(node)
            producer.pop(name, None)
            return name
        return None

    for node in list(graph.node):
        if node.op_type not in LAYER_OPS:
            continue
        for slot in (1, 2):
            if slot < len(node.input) and node.input[slot]:
                resolved = source(node.input[slot])
                if resolved is not None and resolved != node.input[slot]:
                    node.input[slot] = resolved
    _drop_dead_aliases(graph)


def _drop_dead_aliases(graph: onnx.GraphProto) -> None:
    """Remove Identity/Constant nodes nothing reads any more (they may have fed only layer weights)."""
    remove_unread(graph.node, lambda n: n.op_type in ("Identity", "Constant"), {o.name for o in graph.output})


def _fold_gemm_beta(graph: onnx.GraphProto) -> None:
    initializers = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Gemm" or len(node.input) < 3 or node.input[2] not in initializers:
            continue
        factor = float_attribute(node, "beta", 1.0)  # a beta that is not a float is a one-line error
        if factor == 1.0:
            continue
        beta = next(a for a in node.attribute if a.name == "beta")
        values = tensor_values(initializers[node.input[2]])
        name = f"{node.input[2]}_times_beta_{node.name or 'gemm'}"
        while name in initializers:
            name += "_"
        scaled = numpy_helper.from_array((values * factor).astype(values.dtype), name)
        graph.initializer.append(scaled)
        initializers[name] = scaled
        node.input[2] = name
        beta.f = 1.0


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """The quantizable working copy described above (shape-inferred), or :class:`UsageError`."""
    copy = _with_opset(model)
    graph = copy.graph
    _unique_names(graph)
    _resolve_weight_aliases(graph)
    _fold_gemm_beta(graph)
    try:
        return onnx.shape_inference.infer_shapes(copy)
    except Exception as exc:  # onnx raises InferenceError, ValueError (over 2 GB)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"onnx shape inference fails on the model, which the quantizer needs: {detail[:200]}") from exc
