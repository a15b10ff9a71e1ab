"""Write the Q/DQ model with onnxruntime's QDQ quantizer, in the form TensorRT's explicit quantization takes.

TensorRT quantizes symmetrically (zero point 0), activations with one scale per tensor and weights
with one scale per output channel, and builds int8 kernels where Q/DQ nodes say so.  NVIDIA's
placement advice is to quantize the inputs of weighted layers (Conv, ConvTranspose, Gemm/MatMul)
and not their outputs.  So onnxruntime's :class:`~onnxruntime.quantization.QDQQuantizer` runs with

* ``QInt8`` activations and weights, ``ActivationSymmetric`` and ``WeightSymmetric``: every zero
  point 0, scale = calibrated absmax / 127;
* ``per_channel`` weights on the output-channel axis (:mod:`.layers`);
* only the layer op types quantized, and ``OpTypesToExcludeOutputQuantization`` for all of them:
  Q/DQ sit on layer inputs only;
* ``AddQDQPairToWeight``: weights stay float32 behind a Q -> DQ pair; TensorRT quantizes them at
  build time with that scale (older TensorRT parsers rejected an int8 initializer feeding a DQ,
  "only activation types allowed as input to this layer", onnxruntime issue 14229);
* ``DedicatedQDQPair``: each quantized consumer of a tensor gets its own pair, as TensorRT expects;
* ``QuantizeBias`` off: a bias stays float, and TensorRT adds it itself (an int32 bias behind a
  DequantizeLinear is where a TensorRT conversion stopped in onnxruntime issue 17738);
* the activation ranges of :mod:`.calibrate`, computed once and reused for every candidate.

onnxruntime's quantizer rewires *every* consumer of a quantized tensor to its DequantizeLinear
when the tensor has one quantized consumer, layers kept in float and other ops included.
:func:`build_qdq` puts those consumers back on the float tensor, so a layer left out reads exactly
what the float model gives it, and a graph output stays the float value.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterable

import numpy as np
import onnx

from ..errors import QarepError
from .layers import LAYER_OPS
from .report import ActivationRange, QDQLayout

log = logging.getLogger("qarep_onnx")

TENSORRT_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "AddQDQPairToWeight": True,
    "DedicatedQDQPair": True,
    "QuantizeBias": False,
    "OpTypesToExcludeOutputQuantization": list(LAYER_OPS),
    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
    "MatMulConstBOnly": True,
}
_INFER_KEY = "onnx.infer"  # the metadata onnxruntime's quantizer reads to skip its own shape inference


class _QuantizerLogs(logging.Filter):
    """onnxruntime's quantizer logs on the root logger; keep it off the terminal, on ours at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" in record.pathname:
            log.debug("onnxruntime quantizer: %s", record.getMessage())
            return False
        return True


@contextlib.contextmanager
def _quiet_quantizer():
    root = logging.getLogger()
    quiet = _QuantizerLogs()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def mark_inferred(model: onnx.ModelProto) -> None:
    """Tell onnxruntime's quantizer the shapes are inferred (else it re-infers through temporary files on every call)."""
    if not any(p.key == _INFER_KEY for p in model.metadata_props):
        entry = model.metadata_props.add()
        entry.key, entry.value = _INFER_KEY, "onnxruntime.quant"


def _drop_mark(model: onnx.ModelProto, original: onnx.ModelProto) -> None:
    if any(p.key == _INFER_KEY for p in original.metadata_props):
        return
    kept = [p for p in model.metadata_props if p.key != _INFER_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)


def build_qdq(
    prepared: onnx.ModelProto,
    ranges: dict[str, ActivationRange],
    quantize: Iterable[str],
    original: onnx.ModelProto | None = None,
) -> onnx.ModelProto:
    """A Q/DQ copy of ``prepared`` (from :func:`.prepare.prepare`, marked inferred) with the layers named in ``quantize`` in int8.

    ``original`` is the model whose metadata the output must keep (the quantizer's marker is removed
    unless it had it).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QDQQuantizer,
        QuantType,
        TensorData,
        TensorsData,
    )

    names = sorted(set(quantize))
    copy = onnx.ModelProto()
    copy.CopyFrom(prepared)
    if names:
        tensors = TensorsData(
            CalibrationMethod.MinMax,
            {t: TensorData(lowest=np.float32(r.low), highest=np.float32(r.high)) for t, r in ranges.items()},
        )
        try:
            with _quiet_quantizer():
                quantizer = QDQQuantizer(
                    model=copy,
                    per_channel=True,
                    reduce_range=False,
                    weight_qType=QuantType.QInt8,
                    activation_qType=QuantType.QInt8,
                    tensors_range=tensors,
                    nodes_to_quantize=names,
                    nodes_to_exclude=[],
                    op_types_to_quantize=list(LAYER_OPS),
                    extra_options=dict(TENSORRT_OPTIONS),
                )
                copy = quantizer.quantize_model()
        except Exception as exc:  # the quantizer raises ValueError, AssertionError, KeyError ...
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise QarepError(f"onnxruntime's quantizer failed on the model: {type(exc).__name__}: {detail[:200]}") from exc
        _float_consumers_back(copy.graph, set(names))
    _drop_mark(copy, original if original is not None else onnx.ModelProto())
    return copy


def _qdq_sources(graph: onnx.GraphProto) -> dict[str, str]:
    """DequantizeLinear output -> the float tensor its QuantizeLinear read."""
    producer = {out: node for node in graph.node for out in node.output}
    sources = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not node.input:
            continue
        q = producer.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input:
            sources[node.output[0]] = q.input[0]
    return sources


def _float_consumers_back(graph: onnx.GraphProto, quantized: set[str]) -> None:
    """Only quantized layers read dequantized tensors; every other node and every graph output reads the float one."""
    outputs = {o.name for o in graph.output}
    sources = _qdq_sources(graph)
    # A quantized graph output: the quantizer renamed its producer's output and made the DQ output the graph output.
    for dq_out, source in list(sources.items()):
        if dq_out not in outputs:
            continue
        fresh = f"{dq_out}_DequantizeLinear_Output"
        while any(fresh in n.output for n in graph.node):
            fresh += "_"
        for node in graph.node:
            if node.op_type == "DequantizeLinear" and node.output and node.output[0] == dq_out:
                node.output[0] = fresh
            elif node.name in quantized:
                node.input[:] = [fresh if name == dq_out else name for name in node.input]
        for node in graph.node:  # the float value takes its graph-output name back
            node.output[:] = [dq_out if name == source else name for name in node.output]
            node.input[:] = [dq_out if name == source else name for name in node.input]
        sources = _qdq_sources(graph)
    for node in graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(name in sources for name in node.input):
            node.input[:] = [sources.get(name, name) for name in node.input]
    _drop_dead_qdq(graph)


def _drop_dead_qdq(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in read]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | outputs
    kept = [t for t in graph.initializer if t.name in read]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


def qdq_layout(model: onnx.ModelProto, layer_names: Iterable[str]) -> QDQLayout:
    """Read back which layers have Q/DQ on both their data input and their weight, and count the pairs."""
    graph = model.graph
    sources = _qdq_sources(graph)
    nodes = {n.name: n for n in graph.node}
    quantized, floating = [], []
    for name in layer_names:
        node = nodes.get(name)
        if node is not None and len(node.input) > 1 and node.input[0] in sources and node.input[1] in sources:
            quantized.append(name)
        else:
            floating.append(name)
    pairs = sum(1 for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in sources)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return QDQLayout(pairs, tuple(quantized), tuple(floating), opset)
