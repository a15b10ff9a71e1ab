"""The Python API as export pipelines call it: with a graphsurgeon graph, an ONNXProgram, a proto or a path."""

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

import qarep_onnx

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
DETECTOR = FIXTURES / "qarep_detector__dynamo.onnx"
NATIVE_CONVS = 16  # the detector's natively fused export


def test_a_graphsurgeon_pipeline_folds_adds_a_tensorrt_plugin_and_exports(tmp_path):
    original = onnx.load(DETECTOR)
    graph = gs.import_onnx(original)
    nodes_before = len(graph.nodes)

    result = qarep_onnx.optimize(graph)

    assert isinstance(result.model, gs.Graph)
    assert len(graph.nodes) == nodes_before  # the pipeline's own graph is left as it was
    folded = result.model
    assert sum(n.op == "Conv" for n in folded.nodes) == NATIVE_CONVS and result.report.blocks_folded == 9
    # What a TensorRT pipeline does next: an NMS plugin on the heads, outputs renamed, exported.
    heads = list(folded.outputs)
    boxes = gs.Variable("num_detections", dtype=np.int32, shape=[1, 1])
    nms = gs.Node("EfficientNMS_TRT", "nms", attrs={"score_threshold": 0.25, "max_output_boxes": 100},
                  inputs=heads, outputs=[boxes], domain="trt.plugins")
    folded.nodes.append(nms)
    folded.outputs = [boxes]
    exported = gs.export_onnx(folded)
    onnx.checker.check_model(exported)
    assert [n.op_type for n in exported.graph.node].count("EfficientNMS_TRT") == 1
    assert sum(n.op_type == "Conv" for n in exported.graph.node) == NATIVE_CONVS
    # onnxruntime runs what it can of it: the graph up to the plugin's inputs computes what the original did.
    folded.outputs = heads
    folded.nodes.remove(nms)
    runnable = gs.export_onnx(folded.cleanup().toposort())
    check = qarep_onnx.validate(original, runnable, provider="cpu", samples=2)
    assert check.status == "passed", check.summary()


class _ONNXProgram:
    """What ``torch.onnx.export(..., dynamo=True)`` returns, as the fold uses it: its ``model_proto``."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self._proto = proto

    @property
    def model_proto(self) -> onnx.ModelProto:
        return self._proto


def test_an_onnx_program_is_folded_through_its_model_proto():
    proto = onnx.load(DETECTOR)
    before = proto.SerializeToString()
    result = qarep_onnx.optimize(_ONNXProgram(proto), validate=True, provider="cpu")
    assert isinstance(result.model, onnx.ModelProto)
    assert sum(n.op_type == "Conv" for n in result.model.graph.node) == NATIVE_CONVS
    assert proto.SerializeToString() == before  # the program's own proto is untouched


@pytest.mark.parametrize("given", ["proto", "path", "pathlib"])
def test_protos_and_paths_fold_to_the_same_bytes(given):
    path = DETECTOR
    model = {"proto": onnx.load(path), "path": str(path), "pathlib": path}[given]
    folded = qarep_onnx.optimize(model).model
    reference = qarep_onnx.optimize(onnx.load(path)).model
    assert folded.SerializeToString() == reference.SerializeToString()


def test_anything_else_is_a_one_line_error():
    with pytest.raises(qarep_onnx.InputModelError, match="expected an onnx.ModelProto, a path, an onnx_graphsurgeon.Graph"):
        qarep_onnx.optimize(42)
