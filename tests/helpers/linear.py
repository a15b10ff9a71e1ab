"""Builders and checks of the linear-layer tests: BatchNorm1d, Gemm, a fold checked three ways."""

import numpy as np
import onnx

import qarep_onnx

from .checks import assert_same_function


def batch_norm_1d(b, x, channels, shift=True):
    r = b.rng
    params = [
        b.const(r.uniform(0.5, 1.5, channels), "gamma"),
        b.const(r.standard_normal(channels) * 0.3 if shift else np.zeros(channels), "beta"),
        b.const(r.standard_normal(channels) * 0.3 if shift else np.zeros(channels), "mean"),
        b.const(r.uniform(0.5, 1.5, channels), "var"),
    ]
    return b.op("BatchNormalization", [x, *params], epsilon=1e-3)


def gemm(b, x, k, n, trans_a=0, trans_b=1, alpha=1.0, beta=1.0, c_shape=(None,)):
    w = b.rng.standard_normal((n, k) if trans_b else (k, n)) * 0.3
    inputs = [x, b.const(w, "B")]
    if c_shape != (None,):
        shape = {"n": (n,), "1n": (1, n), "scalar": (), "one": (1,)}[c_shape]
        inputs.append(b.const(b.rng.standard_normal(shape) * 0.2, "C"))
    return b.op("Gemm", inputs, transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)


def folded(model, **kwargs):
    optimized, report = qarep_onnx.optimize(model, **kwargs)
    assert_same_function(model, optimized)
    again, second = qarep_onnx.optimize(optimized, **kwargs)
    assert second.regions_folded == 0 and again.SerializeToString() == optimized.SerializeToString()
    onnx.checker.check_model(optimized, full_check=True)
    return optimized, report


def codes(report):
    return {r.code for r in report.refusals}
