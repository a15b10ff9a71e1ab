"""Hypothesis strategies and profiles the property tests share: random blocks, chains and linear regions.

Profiles (environment variable QAREP_HYPOTHESIS_PROFILE): ``ci`` (default; few examples,
derandomized so CI is deterministic) and ``long`` (1000 examples per test; run by
``benchmarks/properties_long.py``).
"""

from __future__ import annotations

import math
import os

import numpy as np
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st

from .builders import BlockSpec, make_builder, qarep_chain_model

# -- profiles ------------------------------------------------------------------------------------

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
settings.register_profile("ci", max_examples=150, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=1000, **_COMMON)
PROFILE_NAME = os.environ.get("QAREP_HYPOTHESIS_PROFILE", "ci")
PROFILE = settings.get_profile(PROFILE_NAME)  # applied per test, so other test modules are unaffected


def scaled(fraction: float) -> settings:
    """The profile with ``fraction`` of its examples (never under 1000 in the long profile)."""
    n = max(1, round(PROFILE.max_examples * fraction))
    if PROFILE_NAME == "long":
        n = max(n, 1000)
    return settings(PROFILE, max_examples=n)


# -- strategies: valid blocks --------------------------------------------------------------------

CHANNELS = [1, 2, 3, 4, 6, 8, 12, 16]
DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64}
CONSTANT_FORMS = ["initializer", "constant", "identity", "mixed"]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def block_specs(draw, channels_in: int | None = None) -> BlockSpec:
    cin = channels_in if channels_in is not None else draw(st.sampled_from(CHANNELS))
    cout = draw(st.sampled_from(CHANNELS))
    return BlockSpec(
        channels_in=cin,
        channels_out=cout,
        groups=draw(st.sampled_from(_divisors(math.gcd(cin, cout)))),
        stride=draw(st.sampled_from([1, 2])),
        dilation=draw(st.sampled_from([1, 2])),
        identity=draw(st.booleans()),
        post_bn=draw(st.booleans()),
        bias_1x1=draw(st.booleans()),
        alpha=draw(st.sampled_from(["none", "one", "scalar", "channel"])),
        alpha_first=draw(st.booleans()),
        bn_3x3=draw(st.sampled_from(["folded", "separate"])),
        zero_add=draw(st.booleans()),
        add_order=tuple(draw(st.permutations([0, 1, 2]))),
        nesting=draw(st.sampled_from(["left", "right", "sum"])),
        activation=draw(st.sampled_from(["Relu", "Sigmoid", ""])),
    )


@st.composite
def block_chains(draw, max_blocks: int) -> list[BlockSpec]:
    specs = [draw(block_specs())]
    for _ in range(draw(st.integers(1, max_blocks)) - 1):
        specs.append(draw(block_specs(channels_in=specs[-1].channels_out)))
    return specs


@st.composite
def chain_models(draw, max_blocks: int = 1, stems: bool = False):
    specs = draw(block_chains(max_blocks))
    args = dict(
        seed=draw(st.integers(0, 2**16)),
        dtype=DTYPES[draw(st.sampled_from(sorted(DTYPES)))],
        constants=draw(st.sampled_from(CONSTANT_FORMS)),
        height=draw(st.integers(1, 10)),
        width=draw(st.integers(1, 10)),
        batch=draw(st.integers(1, 2)),
        stem=draw(st.sampled_from(["", "conv", "conv_bn"])) if stems else "",
    )
    note(f"specs={specs!r}")
    note(f"qarep_chain_model(specs, **{ {k: (v.__name__ if isinstance(v, type) else v) for k, v in args.items()} })")
    return specs, args, qarep_chain_model(specs, **args)


def _affine_steps(b, y, channels, rank, axis, draw) -> str:
    """Random per-channel steps on ``y`` along ``axis`` (BatchNorm only where it acts on that axis)."""
    kinds = ["mul", "add", "sub", "div", "neg"] + (["bn"] if axis == 1 else [])
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=0, max_size=3), label="steps"):
        shape = [1] * rank
        shape[axis] = channels
        if draw(st.booleans(), label="1-D constant") and axis == rank - 1:
            shape = [channels]
        values = b.rng.uniform(0.5, 1.5, shape) * b.rng.choice([-1, 1], shape)
        if kind == "bn":
            y = b.batch_norm(y, channels)
        elif kind == "neg":
            y = b.op("Neg", [y])
        else:
            y = b.op({"mul": "Mul", "add": "Add", "sub": "Sub", "div": "Div"}[kind], [y, b.const(values, kind)])
    return y


@st.composite
def linear_models(draw):
    """A Gemm, MatMul or ConvTranspose with an optional per-channel affine in front, a random chain of
    per-channel steps after it, and an optional second branch of the same kind summed with it."""
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)), label="dtype")]
    b = make_builder(draw(st.integers(0, 2**16), label="seed"), dtype, draw(st.sampled_from(CONSTANT_FORMS), label="constants"))
    kind = draw(st.sampled_from(["Gemm", "MatMul", "ConvTranspose"]), label="kind")
    cin, cout = draw(st.sampled_from([2, 4, 6])), draw(st.sampled_from([2, 4, 6]))
    if kind == "ConvTranspose":
        groups = draw(st.sampled_from([g for g in (1, 2) if cin % g == 0 and cout % g == 0]), label="groups")
        k, stride = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 2]))
        pads, out_pad = draw(st.integers(0, (k - 1) // 2 if k > 1 else 0)), draw(st.integers(0, stride - 1))
        rank, axis = 4, 1
        x = b.input([1, cin, 4, 4])
        front = x
        if draw(st.booleans(), label="scale in front"):
            front = b.op("Mul", [x, b.const(b.rng.uniform(0.5, 1.5, (1, cin, 1, 1)), "t")])
        weights = [b.const(b.rng.standard_normal((cin, cout // groups, k, k)) * 0.3, "w") for _ in range(2)]

        def leaf(w):
            return b.op("ConvTranspose", [front, w, b.const(b.rng.standard_normal(cout) * 0.1, "b")], strides=[stride] * 2,
                        pads=[pads] * 4, output_padding=[out_pad] * 2, group=groups)
    else:
        rank = 2 if kind == "Gemm" else draw(st.sampled_from([2, 3]), label="rank")
        axis = rank - 1
        x = b.input([3, cin] if rank == 2 else [2, 3, cin])
        front = x
        if draw(st.booleans(), label="affine in front"):
            shape = [cin] if draw(st.booleans()) else [1] * (rank - 1) + [cin]
            front = b.op("Add", [b.op("Mul", [x, b.const(b.rng.uniform(0.5, 1.5, shape), "t")]), b.const(b.rng.standard_normal(shape), "s")])
        trans_b = draw(st.booleans(), label="transB")
        alpha, beta = draw(st.sampled_from([1.0, 0.5, -2.0])), draw(st.sampled_from([1.0, 0.25]))

        def leaf(w):
            if kind == "MatMul":
                return b.op("MatMul", [front, w])
            return b.op("Gemm", [front, w, b.const(b.rng.standard_normal(cout) * 0.1, "c")], transB=int(trans_b), alpha=alpha, beta=beta)

        weights = [b.const(b.rng.standard_normal((cout, cin) if (kind == "Gemm" and trans_b) else (cin, cout)) * 0.3, "w")
                   for _ in range(2)]
    y = leaf(weights[0])
    if draw(st.booleans(), label="second branch"):
        y = b.op("Add", [y, leaf(weights[1])])
    y = _affine_steps(b, y, cout, rank, axis, lambda s, label: draw(s, label=label))
    return b.model([y])
