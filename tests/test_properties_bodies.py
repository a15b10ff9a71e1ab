"""Property-based: random regions fold exactly inside model-local functions and If/Loop bodies, where no
rank is declared.

Random blocks and random Gemm/MatMul/ConvTranspose regions (the strategies of the main property
tests), and random token MatMuls whose sequence length may equal their feature count followed by
per-axis steps (a BatchNormalization there normalizes the tokens, not the features), are moved
into a function, a Loop body (one trip) or both branches of an If, with every type and shape of
the body left out.  Whatever the fold does there, the model must compute what it computed.
"""

from __future__ import annotations

import numpy as np
import onnx
from helpers.bodies import in_function, in_if, in_loop
from helpers.builders import make_builder
from helpers.checks import assert_same_function
from helpers.strategies import chain_models, linear_models, scaled
from hypothesis import given, note
from hypothesis import strategies as st

import qarep_onnx


@st.composite
def token_models(draw):
    """x [N, T, D] -> MatMul [D, D] -> steps along any axis (T may equal D)."""
    b = make_builder(draw(st.integers(0, 2**16), label="seed"), np.float32, "initializer")
    d = draw(st.sampled_from([2, 3, 4]), label="features")
    t = draw(st.sampled_from([d, d + 1]), label="tokens")
    x = b.input([2, t, d])
    y = b.op("MatMul", [x, b.const(b.rng.standard_normal((d, d)) * 0.4, "w")])
    steps = ["bn", "mul_last", "mul_tokens", "add_last", "scale"]
    for kind in draw(st.lists(st.sampled_from(steps), max_size=3), label="steps"):
        if kind == "scale":
            y = b.op("Mul", [y, b.const(np.array(b.rng.uniform(0.5, 2.0)), "scalar")])
        elif kind == "bn":
            y = b.batch_norm(y, t)  # axis 1: the tokens
        elif kind == "mul_tokens":
            y = b.op("Mul", [y, b.const(b.rng.uniform(0.5, 1.5, (t, 1)), "tok")])
        else:
            op = "Mul" if kind == "mul_last" else "Add"
            y = b.op(op, [y, b.const(b.rng.uniform(0.5, 1.5, (d,)), "feat")])
    return b.model([y])


WRAPS = {"function": in_function, "loop": in_loop, "if": in_if}


def _check(model: onnx.ModelProto, where: str) -> None:
    wrapped = WRAPS[where](model)
    note(f"wrapped in {where}")
    optimized, report = qarep_onnx.optimize(wrapped)
    note(f"folds: {[(f.graph, f.op_types) for f in report.folds]}, refusals: {[r.code for r in report.refusals]}")
    assert_same_function(wrapped, optimized)

    again, second = qarep_onnx.optimize(optimized)
    assert second.regions_folded == 0


@scaled(0.3)
@given(st.one_of(chain_models(max_blocks=2), linear_models().map(lambda m: (None, None, m))), st.sampled_from(sorted(WRAPS)))
def test_random_regions_fold_exactly_in_bodies_and_functions(case, where):
    _check(case[2], where)


@scaled(0.3)
@given(token_models(), st.sampled_from(sorted(WRAPS)))
def test_token_matmuls_with_steps_on_any_axis_fold_exactly_where_ranks_are_unknown(model, where):
    _check(model, where)
