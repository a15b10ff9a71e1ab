"""Constant tensors of a graph: their element types, shapes, and values read (and checked) on demand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import InputModelError
from .attributes import node_label

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}

_A = onnx.AttributeProto


def type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"


@dataclass(frozen=True)
class Constant:
    """A constant tensor: its shape and element type now, its values on demand."""

    name: str
    shape: tuple[int, ...]
    elem_type: int
    load: Callable[[], np.ndarray]

    @property
    def is_float(self) -> bool:
        return self.elem_type in FLOAT_TYPES


def tensor_values(tensor: onnx.TensorProto, where: str = "") -> np.ndarray:
    """A tensor's values, or :class:`InputModelError` when its data does not match its type and dims."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise InputModelError(
            f"tensor '{tensor.name}'{where} is stored in external data that was not loaded; pass the model's "
            "path, or load it with onnx.load(path) (which reads external data)"
        )
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:  # onnx raises ValueError, TypeError or its own errors for broken tensors
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputModelError(
            f"tensor '{tensor.name}'{where} cannot be read ({detail}): its data does not match its "
            f"{type_name(tensor.data_type)} dims {list(tensor.dims)}"
        ) from exc


def loader(tensor: onnx.TensorProto, where: str) -> Callable[[], np.ndarray]:
    return lambda: tensor_values(tensor, where)


def constant_node_value(node: onnx.NodeProto) -> tuple[tuple[int, ...], int, Callable[[], np.ndarray]] | None:
    """Shape, element type and loader of a Constant node's value, or None for sparse, string or caller values."""
    for attr in node.attribute:
        if attr.ref_attr_name:
            return None  # the value comes from the function's caller
        if attr.name == "value" and attr.type == _A.TENSOR:
            t = attr.t
            return tuple(t.dims), t.data_type, loader(t, f" of Constant '{node_label(node)}'")
        if attr.name == "value_float" and attr.type == _A.FLOAT:
            return (), onnx.TensorProto.FLOAT, lambda v=attr.f: np.array(v, np.float32)
        if attr.name == "value_floats" and attr.type == _A.FLOATS:
            values = list(attr.floats)
            return (len(values),), onnx.TensorProto.FLOAT, lambda v=values: np.array(v, np.float32)
        if attr.name == "value_int" and attr.type == _A.INT:
            return (), onnx.TensorProto.INT64, lambda v=attr.i: np.array(v, np.int64)
        if attr.name == "value_ints" and attr.type == _A.INTS:
            values = list(attr.ints)
            return (len(values),), onnx.TensorProto.INT64, lambda v=values: np.array(v, np.int64)
    return None


