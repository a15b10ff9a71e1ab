"""Where Q/DQ pairs go: on the tensors TensorRT reads in int8, following NVIDIA's placement guidance.

TensorRT's explicit quantization runs a layer in int8 where Q/DQ says so, and its developer guide
("Q/DQ layer-placement recommendations") advises: quantize every input of a weighted layer
(Conv, ConvTranspose, Gemm/MatMul) and not its output; quantize the residual input of an
element-wise Add that follows a weighted layer, so TensorRT fuses the Add into that layer and
reads the skip connection in int8; and give ops TensorRT can run in int8 (pooling, Concat, Resize,
reshape-like ops) Q/DQ on their inputs when what they compute flows on into quantized layers, so
int8 keeps flowing between layers instead of falling back to higher precision.  Placement
``"tensorrt"`` does all three; ``"narrow"`` only the first (the layer inputs).

A **site** is one Q/DQ pair: the float tensor it quantizes and the one node input that reads the
dequantized value (each consumer its own pair, as TensorRT expects).  Every other reader of the
tensor, and a graph output, keeps reading the float value.  Sites depend on which layers are
quantized; each carries the set of layers that must all be in int8 for it to be present
(``requires``), so one structure, computed for every layer quantized, serves every candidate set.

* layer site: the layer's data input; requires the layer.
* residual site: ``Add(a, b)`` where ``a`` is computed by a layer read by nothing else (TensorRT
  fuses the Add into it): ``b`` is quantized; requires that layer.  When both operands come from
  such layers, the one computed later is fused and the earlier one is the skip connection.
* flow site: each data input of a flow op (:data:`.ops.FLOW`) whose output is read only by
  quantized layers and other such flow ops; requires every layer it flows into.

Scales: ops that only move or select values (max pooling, Concat, nearest Resize, reshapes) pass
int8 values through unchanged in TensorRT only when their inputs and output share one scale, so
the tensors joined by such a flow op form a *scale group* calibrated together (the largest range
of the group).  Groups are computed once, for every layer quantized, and kept for every candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ..graph.walk import input_slots
from .layers import Layer
from .ops import FLOW, RESIDUAL, flow_data_inputs, flow_shares_scale

PLACEMENTS = ("tensorrt", "narrow")


@dataclass(frozen=True)
class Site:
    """One Q/DQ pair: ``consumer`` (a node name) reads ``tensor`` at input ``slot`` through it."""

    tensor: str
    consumer: str
    slot: int
    role: str  # "layer", "residual" or "flow"
    requires: frozenset[str]  # layers that must all be in int8 for the pair to be present


@dataclass
class Placement:
    """Every site possible with every layer in int8, and the scale group of every tensor they quantize."""

    mode: str
    sites: list[Site]
    groups: dict[str, str] = field(default_factory=dict)  # tensor -> the group's representative tensor

    def active(self, quantized: set[str] | frozenset[str]) -> list[Site]:
        """The sites present when exactly the layers in ``quantized`` are in int8."""
        return [s for s in self.sites if s.requires <= quantized]

    def key(self, tensor: str) -> str:
        """The tensor whose calibrated range (that of its whole group) sets ``tensor``'s scale."""
        return self.groups.get(tensor, tensor)

    def members(self) -> dict[str, list[str]]:
        """Scale key -> every tensor calibrated together under it (a tensor alone is its own key)."""
        out: dict[str, set[str]] = {}
        for tensor in self.tensors:
            out.setdefault(self.key(tensor), set()).add(tensor)
        return {key: sorted(tensors) for key, tensors in out.items()}

    @property
    def tensors(self) -> list[str]:
        """Every tensor whose range calibration must measure (group members included)."""
        return sorted({s.tensor for s in self.sites} | set(self.groups))


def _constants(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _residual_sites(graph, layers: dict[str, Layer], consumers, constants, outputs) -> list[Site]:
    order = {n.name: k for k, n in enumerate(graph.node)}
    by_output = {l.output: l for l in layers.values() if l.output}
    sites = []
    for node in graph.node:
        if node.op_type not in RESIDUAL or len(node.input) != 2 or any(i in constants or not i for i in node.input):
            continue
        fusable = [
            (slot, by_output[name]) for slot, name in enumerate(node.input)
            if name in by_output and name not in outputs and len(consumers.get(name, [])) == 1
        ]
        if not fusable or node.input[0] == node.input[1]:
            continue
        slot, fused = max(fusable, key=lambda f: order[f[1].name])  # the later layer is fused, the other is the skip
        other = 1 - slot
        sites.append(Site(node.input[other], node.name, other, "residual", frozenset({fused.name})))
    return sites


def _flow_requirements(graph, layers: dict[str, Layer], consumers, constants, outputs) -> dict[str, frozenset[str]]:
    """Flow op name -> the layers its output flows into, for the flow ops that qualify with every layer in int8."""
    qualified: dict[str, frozenset[str]] = {}
    for node in reversed(graph.node):  # consumers come later in a sorted graph
        if node.op_type not in FLOW or not node.output or node.output[0] in outputs:
            continue
        slots = flow_data_inputs(node)
        if not slots or any(node.input[k] in constants for k in slots):
            continue
        readers = consumers.get(node.output[0], [])
        needed: set[str] = set()
        for reader, slot in readers:
            if reader.name in layers and slot == 0:
                needed.add(reader.name)
            elif reader.name in qualified and slot in flow_data_inputs(reader):
                needed |= qualified[reader.name]
            else:
                needed = set()
                break
        if readers and needed:
            qualified[node.name] = frozenset(needed)
    return qualified


class _Groups:
    """Union-find over tensor names."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def place(model: onnx.ModelProto, layers: list[Layer], mode: str = "tensorrt") -> Placement:
    """Every site of ``model`` (prepared, topologically sorted) with every one of ``layers`` in int8."""
    if mode not in PLACEMENTS:
        raise ValueError(f"unknown placement {mode!r}")
    graph = model.graph
    by_name = {l.name: l for l in layers}
    sites = [Site(l.activation, l.name, 0, "layer", frozenset({l.name})) for l in layers]
    if mode == "narrow":
        return Placement(mode, sites)
    consumers, constants = input_slots(graph.node), _constants(graph)
    outputs = {o.name for o in graph.output}
    sites += _residual_sites(graph, by_name, consumers, constants, outputs)
    flows = _flow_requirements(graph, by_name, consumers, constants, outputs)
    groups = _Groups()
    for node in graph.node:
        if node.name not in flows:
            continue
        for slot in flow_data_inputs(node):
            sites.append(Site(node.input[slot], node.name, slot, "flow", flows[node.name]))
            if flow_shares_scale(node):
                groups.union(node.input[slot], node.output[0])
    return Placement(mode, sites, {t: groups.find(t) for t in list(groups.parent)})
