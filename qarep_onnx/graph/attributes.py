"""Node attributes read with their types and values checked, and the words that name a node in messages.

A model that is not valid ONNX (an attribute of the wrong type, pads of the wrong length) raises
:class:`~qarep_onnx.errors.InputModelError` where the attribute is read, never an IndexError; an
attribute that a model-local function takes from its caller is not a constant, which is a
:class:`~qarep_onnx.errors.Refused` with its reason.
"""

from __future__ import annotations

import onnx

from ..errors import Code, InputModelError, Reason, Refused

_A = onnx.AttributeProto


def node_label(node: onnx.NodeProto) -> str:
    """A node's name, or a description of it when it has none (for messages and reports)."""
    return node.name or f"<{node.op_type} -> {node.output[0] if node.output else '?'}>"


def malformed(node: onnx.NodeProto, problem: str) -> InputModelError:
    return InputModelError(f"{node.op_type} '{node_label(node)}' {problem}; the model is not valid ONNX, fix its export")


def caller_attribute(node: onnx.NodeProto, name: str, reference: str) -> Refused:
    """An attribute of a node in a model-local function whose value the caller supplies (``ref_attr_name``):
    not a constant, so whatever needs it is not folded."""
    return Refused(Reason(
        Code.NON_CONSTANT,
        f"{node.op_type} '{node_label(node)}' takes its attribute '{name}' from the function's caller "
        f"(attribute '{reference}'), so its value is not known inside the function",
    ))


def _attribute_proto(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    for attr in node.attribute:
        if attr.name == name:
            if attr.ref_attr_name:
                raise caller_attribute(node, name, attr.ref_attr_name)
            return attr
    return None


def _typed(node: onnx.NodeProto, name: str, kind: int):
    attr = _attribute_proto(node, name)
    if attr is None:
        return None
    if attr.type != kind:
        raise malformed(node, f"has attribute '{name}' of type {_A.AttributeType.Name(attr.type)}, "
                              f"expected {_A.AttributeType.Name(kind)}")
    return onnx.helper.get_attribute_value(attr)


def int_attribute(node: onnx.NodeProto, name: str, default: int, minimum: int | None = None) -> int:
    value = _typed(node, name, _A.INT)
    value = default if value is None else int(value)
    if minimum is not None and value < minimum:
        raise malformed(node, f"has attribute {name}={value}; it must be at least {minimum}")
    return value


def float_attribute(node: onnx.NodeProto, name: str, default: float) -> float:
    value = _typed(node, name, _A.FLOAT)
    return default if value is None else float(value)


def string_attribute(node: onnx.NodeProto, name: str, default: str) -> str:
    value = _typed(node, name, _A.STRING)
    if value is None:
        return default
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def ints_attribute(
    node: onnx.NodeProto, name: str, default: tuple[int, ...], length: int | None = None, minimum: int | None = None
) -> tuple[int, ...]:
    value = _typed(node, name, _A.INTS)
    values = tuple(default) if value is None else tuple(int(v) for v in value)
    if length is not None and len(values) != length:
        raise malformed(node, f"has {len(values)} values in attribute '{name}' where it needs {length}")
    if minimum is not None and any(v < minimum for v in values):
        raise malformed(node, f"has attribute {name}={list(values)}; every value must be at least {minimum}")
    return values




def check_input_count(node: onnx.NodeProto, least: int, most: int) -> None:
    """A node with fewer or more inputs than its operator takes (or no first input) is not valid ONNX."""
    n = len(node.input)
    if not least <= n <= most or not node.input[0]:
        needs = f"{least}" if least == most else f"{least} to {most}"
        raise malformed(node, f"has {n} inputs where it takes {needs}")
