"""Models broken the ways a buggy fold would break them, to prove that validation rejects them.

Each function takes a correctly folded model and its report (or, for a dropped branch, the
original) and returns a broken copy; the original objects are left as they were.  Used by
tests/test_validate.py and benchmarks/validation_calibration.py.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

import qarep_onnx


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _middle_fold(report, wide_kernel: bool = False):
    folds = [f for f in report.folds if not f.graph and (not wide_kernel or (f.kernel and f.kernel[-1] > 1))]
    return folds[len(folds) // 2]


def _weights(model: onnx.ModelProto, fold) -> tuple[onnx.TensorProto, onnx.TensorProto]:
    node = next(n for n in model.graph.node if n.name == fold.node)
    tensors = {t.name: t for t in model.graph.initializer}
    return tensors[node.input[1]], tensors[node.input[2]]


def _edit(tensor: onnx.TensorProto, change) -> None:
    values = numpy_helper.to_array(tensor).copy()
    change(values)
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def scale_one_channel(model, report, factor: float = 1.01):
    """One output channel of one folded Conv (mid-network) scaled: a wrong BatchNorm factor for one channel."""
    broken = _copy(model)
    weight, bias = _weights(broken, _middle_fold(report))

    def scale(values):
        values[0] *= factor

    _edit(weight, scale)
    _edit(bias, scale)
    return broken


def shift_one_bias(model, report, fraction: float = 0.01):
    """One bias element shifted by ``fraction`` of the Conv's largest weight or bias: a mean subtracted wrong."""
    broken = _copy(model)
    weight, bias = _weights(broken, _middle_fold(report))
    size = max(float(np.abs(numpy_helper.to_array(weight)).max()), float(np.abs(numpy_helper.to_array(bias)).max()))

    def shift(values):
        values[0] += fraction * size

    _edit(bias, shift)
    return broken


def shift_kernel_tap(model, report):
    """A folded kernel misaligned by one tap along its last spatial axis: a wrong centre alignment."""
    broken = _copy(model)
    weight, _ = _weights(broken, _middle_fold(report, wide_kernel=True))

    def roll(values):
        values[...] = np.roll(values, 1, axis=-1)

    _edit(weight, roll)
    return broken


def scale_every_weight(model, report, factor: float = 1.001):
    """Every folded weight scaled by ``factor``: a scale applied twice, or an epsilon forgotten, everywhere."""
    broken = _copy(model)
    for fold in report.folds:
        if not fold.graph:
            weight, _ = _weights(broken, fold)
            _edit(weight, lambda values: values.__imul__(factor))
    return broken


def drop_branch(original, report):
    """The original with one term of one mid-network block's sum left out, then folded: a branch forgotten."""
    blocks = [f for f in report.folds if not f.graph and f.is_block]
    fold = blocks[len(blocks) // 2]
    broken = _copy(original)
    sums = [n for n in broken.graph.node if n.name in fold.removed_nodes and n.op_type in ("Add", "Sum") and len(n.input) == 2]
    node = sums[0]
    node.op_type = "Identity"
    del node.input[1:]
    return qarep_onnx.optimize(broken).model


BREAKAGES = {
    "one channel x1.01": scale_one_channel,
    "one bias element shifted": shift_one_bias,
    "a kernel shifted by one tap": shift_kernel_tap,
    "every weight x1.001": scale_every_weight,
}
