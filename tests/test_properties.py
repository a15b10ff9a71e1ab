"""Property-based tests: random blocks always fold exactly; random mutants never fold wrongly.

1. Random QARepVGG blocks (channels, groups, stride, dilation, alpha and its operand order, 1x1
   bias, post-BN, identity, order and nesting of the Adds, separate or folded 3x3 BN, Add(., 0.0),
   activation), in every constant form exporters write, in float32/float16/float64, alone or in
   chains of up to three behind an optional stem: every block folds, one Conv per block remains,
   the numbers match onnxruntime's run of the original (ORT_DISABLE_ALL), and a second run folds
   nothing.
2. Random mutations of valid block models (hand-built and the bundled fixtures): rewire an input
   to another tensor of the same type and shape, turn a constant into a graph input, give an
   interior tensor a second consumer, change a constant's shape, change a Conv attribute.  Mutants
   onnxruntime cannot run are discarded.  Whatever is left must either fold correctly or stay
   unchanged: optimize raises nothing but a QarepError, and its output matches the mutant.

Profiles (environment variable QAREP_HYPOTHESIS_PROFILE): ``ci`` (default; few examples,
derandomized so CI is deterministic) and ``long`` (1000 examples per test; run by
``benchmarks/properties_long.py``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.checks import assert_same_function, count
from helpers.strategies import (
    chain_models,
    linear_models,
    scaled,
)
from hypothesis import assume, event, given, note
from hypothesis import strategies as st
from onnx import helper, numpy_helper

import qarep_onnx
from qarep_onnx.runtime.inputs import random_input_sets
from qarep_onnx.runtime.noise import DEFAULT_RTOL, as_float32, model_float_type

# -- 1. random valid blocks fold exactly -----------------------------------------------------------


def _check_folds_exactly(specs, args, model, keep_post_bn):
    stem = args.get("stem", "")
    optimized, report = qarep_onnx.optimize(model, keep_post_bn=keep_post_bn)
    messages = [r.message for r in report.refusals]
    assert not report.refusals, messages
    assert report.blocks_folded == len(specs), messages
    # --keep-post-bn keeps every BatchNorm that ends a region: a stem's Conv -> BN is then no fold.
    stem_chain = stem == "conv_bn" and not keep_post_bn
    assert report.regions_folded == len(specs) + stem_chain, messages
    assert count(optimized, "Conv") == len(specs) + bool(stem)
    kept_bns = sum(s.post_bn for s in specs) + (stem == "conv_bn") if keep_post_bn else 0
    assert count(optimized, "BatchNormalization") == kept_bns
    allowed = {"Conv", "BatchNormalization", "Relu", "Sigmoid"}
    kept = {t for n in optimized.graph.node if n.op_type == "BatchNormalization" for t in n.input[1:]}
    if stem == "conv" or (stem == "conv_bn" and keep_post_bn):
        kept.update(next(n for n in model.graph.node if n.op_type == "Conv").input[1:])
    for node in optimized.graph.node:  # constant nodes survive only for a kept BN or the stem Conv
        if node.op_type in ("Constant", "Identity"):
            assert node.output[0] in kept, node
        else:
            assert node.op_type in allowed, node
    elem_type = model.graph.input[0].type.tensor_type.elem_type
    assert {t.data_type for t in optimized.graph.initializer} == {elem_type}
    assert_same_function(model, optimized)
    again, report2 = qarep_onnx.optimize(optimized)
    if keep_post_bn:
        again_partial, report3 = qarep_onnx.optimize(optimized, keep_post_bn=True)
        assert report3.regions_folded == 0 and again_partial.SerializeToString() == optimized.SerializeToString()
        # A kept BatchNorm now follows a plain Conv, which a later full run folds like any
        # Conv->BN; no block is left to fold, and nothing else changes.
        assert report2.blocks_folded == 0
        assert report2.regions_folded == kept_bns
        assert count(again, "BatchNormalization") == 0
        assert_same_function(model, again)
    else:
        assert report2.regions_folded == 0, [f.output for f in report2.folds]
        assert again.SerializeToString() == optimized.SerializeToString()


@scaled(1.0)
@given(chain_models(max_blocks=1), st.booleans())
def test_random_block_folds_exactly(case, keep_post_bn):
    specs, args, model = case
    _check_folds_exactly(specs, args, model, keep_post_bn)


@scaled(0.7)
@given(chain_models(max_blocks=3, stems=True), st.booleans())
def test_random_chain_folds_exactly(case, keep_post_bn):
    specs, args, model = case
    _check_folds_exactly(specs, args, model, keep_post_bn)


# -- 1b. random Gemm / MatMul / ConvTranspose regions fold exactly --------------------------------------


@scaled(0.5)
@given(linear_models(), st.booleans())
def test_random_linear_region_folds_exactly(model, keep_post_bn):
    linear = ("Gemm", "MatMul", "ConvTranspose")  # a 2-D MatMul folds into a Gemm
    optimized, report = qarep_onnx.optimize(model, keep_post_bn=keep_post_bn)
    assert_same_function(model, optimized)
    assert sum(count(optimized, op) for op in linear) <= sum(count(model, op) for op in linear)
    if not report.refusals and not keep_post_bn:
        # One operator, and for an N-D MatMul one op adding its bias (an Add, or the Sub it had already).
        computed = [n.op_type for n in optimized.graph.node if n.op_type not in ("Constant", "Identity")]
        assert sum(op in linear for op in computed) == 1 and len(computed) <= 2, computed
        assert set(computed) - set(linear) <= {"Add", "Sub"}, computed
    again, second = qarep_onnx.optimize(optimized, keep_post_bn=keep_post_bn)
    assert second.regions_folded == 0 and again.SerializeToString() == optimized.SerializeToString()


# -- 2. random mutations fold correctly or not at all ----------------------------------------------

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
SMALL_FIXTURES = sorted(
    e["file"] for e in MANIFEST if e["kind"] != "detector" and (FIXTURES / e["file"]).stat().st_size <= 16_000
)


@functools.lru_cache(maxsize=None)
def _fixture_bytes(file: str) -> bytes:
    return (FIXTURES / file).read_bytes()


def _tensor_types(model: onnx.ModelProto) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Element type and static shape of every tensor whose shape is known."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    types = {}
    for info in list(g.value_info) + list(g.output) + list(g.input):
        t = info.type.tensor_type
        if info.type.HasField("tensor_type") and t.HasField("shape") and all(d.dim_value > 0 for d in t.shape.dim):
            types[info.name] = (t.elem_type, tuple(d.dim_value for d in t.shape.dim))
    for init in g.initializer:
        types[init.name] = (init.data_type, tuple(init.dims))
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    types[node.output[0]] = (a.t.data_type, tuple(a.t.dims))
    return types


def _constants(model: onnx.ModelProto) -> list[str]:
    """Initializer names and outputs of Constant nodes with a tensor value."""
    names = [t.name for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant" and any(a.name == "value" for a in node.attribute):
            names.append(node.output[0])
    return names


def _constant_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    raise KeyError(name)


def _set_constant(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(array, name))
            return
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            value = numpy_helper.from_array(array, node.attribute[0].t.name)
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", value))
            return
    raise KeyError(name)


def _fresh(model: onnx.ModelProto, base: str) -> str:
    taken = {n for node in model.graph.node for n in list(node.output) + list(node.input)}
    taken |= {t.name for t in model.graph.initializer} | {v.name for v in model.graph.input}
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def mutate_rewire(model, data) -> str:
    """Point one node input at another available tensor of the same type and shape."""
    g = model.graph
    types = _tensor_types(model)
    node_ids = [i for i, n in enumerate(g.node) if n.op_type != "Constant" and any(n.input)]
    assume(node_ids)
    i = data.draw(st.sampled_from(node_ids), label="rewired node")
    node = g.node[i]
    slot = data.draw(st.sampled_from([k for k, t in enumerate(node.input) if t]), label="input slot")
    old = node.input[slot]
    available = [v.name for v in g.input] + [t.name for t in g.initializer]
    available += [o for n in g.node[:i] for o in n.output if o]
    candidates = sorted({t for t in available if t != old and old in types and types.get(t) == types[old]})
    assume(candidates)
    new = data.draw(st.sampled_from(candidates), label="new source")
    node.input[slot] = new
    return f"rewire {node.op_type} '{node.name}' input {slot}: {old} -> {new}"


def mutate_non_constant(model, data) -> str:
    """Make a constant a graph input: overridable initializer, or a true input fed at random."""
    g = model.graph
    types = _tensor_types(model)
    constants = [c for c in _constants(model) if c in types]
    assume(constants)
    name = data.draw(st.sampled_from(constants), label="constant")
    elem, shape = types[name]
    inits = {t.name for t in g.initializer}
    mode = data.draw(st.sampled_from(["override", "input"] if name in inits else ["input"]), label="mode")
    if mode == "input":
        for k, t in enumerate(g.initializer):
            if t.name == name:
                del g.initializer[k]
                break
        else:
            k = next(k for k, n in enumerate(g.node) if n.op_type == "Constant" and n.output[0] == name)
            del g.node[k]
    if model.ir_version < 4 and mode == "override":
        assume(False)
    g.input.append(helper.make_tensor_value_info(name, elem, list(shape)))
    return f"non-constant {name} {list(shape)} ({mode})"


def mutate_second_consumer(model, data) -> str:
    """Give an interior tensor another reader: a graph output, a Relu, or an Add with an output."""
    g = model.graph
    types = _tensor_types(model)
    outputs = {o.name for o in g.output}
    constants = set(_constants(model))
    interior = sorted(
        o for n in g.node if n.op_type not in ("Constant",) for o in n.output
        if o and o not in outputs and o not in constants and o in types
    )
    assume(interior)
    t = data.draw(st.sampled_from(interior), label="interior tensor")
    elem, shape = types[t]
    same_shape_outputs = [o.name for o in g.output if types.get(o.name) == (elem, shape)]
    modes = ["graph_output", "relu"] + (["add_output", "add_replace"] if same_shape_outputs else [])
    mode = data.draw(st.sampled_from(modes), label="mode")
    if mode == "graph_output":
        g.output.append(helper.make_tensor_value_info(t, elem, list(shape)))
        return f"graph output {t}"
    new = _fresh(model, f"{t}_reader")
    if mode == "relu":
        g.node.append(helper.make_node("Relu", [t], [new], name=new))
    else:
        final = data.draw(st.sampled_from(same_shape_outputs), label="final output")
        order = [final, t] if data.draw(st.booleans(), label="final first") else [t, final]
        g.node.append(helper.make_node("Add", order, [new], name=new))
        if mode == "add_replace":
            k = next(k for k, o in enumerate(g.output) if o.name == final)
            del g.output[k]
    g.output.append(helper.make_tensor_value_info(new, elem, list(shape)))
    return f"second consumer of {t}: {mode}"


def mutate_constant_shape(model, data) -> str:
    """Give a constant another shape, e.g. alpha [1] -> [C] (which broadcasts along W).

    Constants that Mul/Add/Sub/Div/Sum combine with a tensor are preferred, and the new shape is
    built from that tensor's dimensions so that it mostly still broadcasts.
    """
    g = model.graph
    types = _tensor_types(model)
    constants = [c for c in _constants(model) if c in types]
    assume(constants)
    data_shapes = {}  # constant -> shape of the tensor it is combined with
    for n in g.node:
        if n.op_type in ("Mul", "Add", "Sub", "Div", "Sum"):
            others = [types[t][1] for t in n.input if t in types and t not in constants]
            for t in n.input:
                if t in constants and others:
                    data_shapes.setdefault(t, others[0])
    preferred = sorted(data_shapes)
    pool = preferred if preferred and data.draw(st.integers(0, 4), label="prefer") else constants
    name = data.draw(st.sampled_from(pool), label="constant")
    elem, shape = types[name]
    target = data_shapes.get(name)
    if target is None or len(target) != 4:
        dims4 = [s for _, s in types.values() if len(s) == 4]
        target = data.draw(st.sampled_from(dims4), label="like") if dims4 else (1, 1, 1, 1)
    _, c, h, w = target
    templates = [(), (1,), (c,), (w,), (h,), (1, c, 1, 1), (c, 1, 1), (1, 1, 1, w), (1, 1, h, 1), (1, c, h, w),
                 (1, 1, 1, 1, 1), (1, c), (c, 1), (1, 1, 1, 1), (c, h, 1), (1, 1, h, w)]
    new_shape = data.draw(st.sampled_from([s for s in templates if s != shape] or templates), label="shape")
    old = _constant_array(model, name)
    if old.size == int(np.prod(new_shape)) and data.draw(st.booleans(), label="keep values"):
        values = old.reshape(new_shape)
    else:
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="values seed"))
        values = rng.uniform(0.5, 1.5, new_shape).astype(old.dtype)
    _set_constant(model, name, np.ascontiguousarray(values))
    return f"reshape {name} {list(shape)} -> {list(new_shape)}"


def mutate_conv_attribute(model, data) -> str:
    """Change one of a Conv's pads, strides or dilations (branches may stop lining up)."""
    g = model.graph
    convs = [n for n in g.node if n.op_type == "Conv"]
    assume(convs)
    node = data.draw(st.sampled_from(convs), label="conv")
    attrs = {a.name: a for a in node.attribute}
    name = data.draw(st.sampled_from(["pads", "strides", "dilations"]), label="attribute")
    rank = 2
    if "kernel_shape" in attrs:
        rank = len(attrs["kernel_shape"].ints)
    length = 2 * rank if name == "pads" else rank
    low = 0 if name == "pads" else 1
    values = data.draw(st.lists(st.integers(low, 3), min_size=length, max_size=length), label="values")
    if name in attrs:
        attrs[name].CopyFrom(helper.make_attribute(name, values))
    else:
        node.attribute.append(helper.make_attribute(name, values))
    for a in node.attribute:
        if a.name == "auto_pad":
            node.attribute.remove(a)
            break
    return f"{node.name or node.output[0]}.{name} = {values}"


_SWAPS = {"Add": "Sub", "Sub": "Add", "Mul": "Div", "Div": "Mul", "Relu": "Identity", "Sigmoid": "Identity"}


def mutate_op_type(model, data) -> str:
    """Swap an op for a relative: Add<->Sub, Mul<->Div, an activation -> Identity, Sum -> Add/Sub.

    Mul becomes Div only when its second operand is a constant: dividing by a tensor (SiLU's
    x * sigmoid(x) -> x / sigmoid(x) reaches 2e4 on these inputs) amplifies the float32
    rounding of any fold far beyond a relative tolerance, which would fail exact folds.
    """
    g = model.graph
    constants = set(_constants(model))
    nodes = [
        n for n in g.node
        if (n.op_type in _SWAPS and (n.op_type != "Mul" or n.input[1] in constants))
        or (n.op_type == "Sum" and len(n.input) == 2)
    ]
    assume(nodes)
    node = data.draw(st.sampled_from(nodes), label="node")
    old = node.op_type
    node.op_type = data.draw(st.sampled_from(["Add", "Sub"]), label="new op") if old == "Sum" else _SWAPS[old]
    return f"{node.name}: {old} -> {node.op_type}"


def mutate_insert_unary(model, data) -> str:
    """Insert a one-input op (linear, blocking or not linear) in front of one input of a node.

    The non-linear ones (Relu, Abs) are 1-Lipschitz and keep magnitudes, so a correct fold
    before them stays within the relative tolerance.
    """
    g = model.graph
    types = _tensor_types(model)
    constants = set(_constants(model))
    slots = [(i, k) for i, n in enumerate(g.node) if n.op_type != "Constant"
             for k, t in enumerate(n.input) if t and t not in constants]
    assume(slots)
    i, k = data.draw(st.sampled_from(slots), label="slot")
    node = g.node[i]
    t = node.input[k]
    new = _fresh(model, f"{t}_inserted")
    op = data.draw(st.sampled_from(["Identity", "Neg", "Relu", "Dropout", "Cast", "AveragePool", "ScaleBy", "Abs"]),
                   label="op")
    if op == "Cast":
        assume(t in types)
        inserted = helper.make_node("Cast", [t], [new], name=new, to=types[t][0])
    elif op == "AveragePool":
        include = data.draw(st.sampled_from([0, 1]), label="count_include_pad")
        inserted = helper.make_node("AveragePool", [t], [new], name=new, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                    strides=[1, 1], count_include_pad=include)
    elif op == "ScaleBy":
        assume(t in types and types[t][0] in DTYPE_OF)
        factor = numpy_helper.from_array(np.array(data.draw(st.sampled_from([0.5, -2.0, 1.0])), DTYPE_OF[types[t][0]]),
                                         _fresh(model, f"{new}_factor"))
        g.initializer.append(factor)
        inserted = helper.make_node("Mul", [t, factor.name], [new], name=new)
    else:
        inserted = helper.make_node(op, [t], [new], name=new)
    node.input[k] = new
    g.node.insert(i, inserted)
    return f"insert {op} on {t} before {node.op_type} '{node.name}'"


DTYPE_OF = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.DOUBLE: np.float64}

MUTATIONS = [mutate_rewire, mutate_non_constant, mutate_second_consumer, mutate_constant_shape, mutate_conv_attribute,
             mutate_op_type, mutate_insert_unary]


def _reference_runs(model: onnx.ModelProto) -> bool:
    """onnxruntime (CPU, ORT_DISABLE_ALL) loads and runs the model and every output is finite.

    Runs on float32 copies as validation does, with onnxruntime's logging silenced: most
    rejected mutants fail inside onnxruntime, which would log every failure.
    """
    import onnxruntime as ort

    checked = model if model_float_type(model) == onnx.TensorProto.FLOAT else as_float32(model)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        s = ort.InferenceSession(checked.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outputs = s.run(None, random_input_sets(checked)[0].feeds)
    except Exception:
        return False
    return all(np.all(np.isfinite(np.asarray(v, np.float64))) for v in outputs)


_NARROW = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def _rtol(model: onnx.ModelProto) -> float | None:
    """The dtype's tolerance, or float16's when a Cast to a narrower float sits in the graph.

    Such a Cast (the neg_cast_branch fixtures have one) rounds to float16: a fold that moves a
    value by one float32 ulp may flip it to the neighbouring float16 (seen: 2.4e-4 on 8.4).
    """
    narrowing = any(
        n.op_type == "Cast" and any(a.name == "to" and a.i in _NARROW for a in n.attribute) for n in model.graph.node
    )
    return DEFAULT_RTOL[onnx.TensorProto.FLOAT16] if narrowing else None


def _check_mutant(base: onnx.ModelProto, data) -> None:
    mutant = onnx.ModelProto()
    mutant.CopyFrom(base)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
        note(mutation(mutant, data))
    assume(_reference_runs(mutant))
    keep_post_bn = data.draw(st.booleans(), label="keep_post_bn")
    before = mutant.SerializeToString()
    try:
        optimized, report = qarep_onnx.optimize(mutant, keep_post_bn=keep_post_bn)
    except qarep_onnx.QarepError as error:  # allowed, though ideally never raised
        event(f"QarepError: {type(error).__name__}")
        return
    assert mutant.SerializeToString() == before, "optimize modified its input"
    event(f"regions folded: {min(report.regions_folded, 3)}")
    for code in sorted({r.code for r in report.refusals}):
        event(f"refusal {code}")
    assert_same_function(mutant, optimized, rtol=_rtol(mutant))
    if report.regions_folded == 0:
        assert optimized.graph.SerializeToString() == mutant.graph.SerializeToString(), "changed without folding"


@scaled(1.0)
@given(chain_models(max_blocks=2), st.data())
def test_mutated_block_folds_correctly_or_not_at_all(case, data):
    _, _, model = case
    _check_mutant(model, data)


@pytest.mark.skipif(not SMALL_FIXTURES, reason="no bundled fixtures")
@scaled(1.0)
@given(st.sampled_from(SMALL_FIXTURES or ["-"]), st.data())
def test_mutated_fixture_folds_correctly_or_not_at_all(file, data):
    note(f"fixture {file}")
    _check_mutant(onnx.ModelProto.FromString(_fixture_bytes(file)), data)


# -- 3. the whole command line on mutated fixtures -------------------------------------------------------

import contextlib  # noqa: E402
import io  # noqa: E402
import tempfile  # noqa: E402

from qarep_onnx.cli.main import main as cli_main  # noqa: E402

DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4, 5}


def mutate_malformed(model, data) -> str:
    """Break one node the way the outside audit did (group 0, pads as an int, a short weight, ...)."""
    from helpers.malformed import MALFORMED

    name = data.draw(st.sampled_from(sorted(MALFORMED)), label="malformed")
    try:
        MALFORMED[name](model)
    except (StopIteration, KeyError, IndexError):
        assume(False)  # the fixture has no node of that kind in that form
    return f"malformed: {name}"


def _run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli_main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _checker_passes(model: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(model, full_check=True)
        return True
    except Exception:
        return False


@pytest.mark.skipif(not SMALL_FIXTURES, reason="no bundled fixtures")
@scaled(0.3)
@given(st.sampled_from(SMALL_FIXTURES or ["-"]), st.data())
def test_the_command_line_on_mutated_fixtures(file, data):
    """Exit code documented, one line on error, no file but the outputs touched, a valid output for a
    valid input, and a second run that changes nothing."""
    note(f"fixture {file}")
    mutant = onnx.ModelProto.FromString(_fixture_bytes(file))
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        note(data.draw(st.sampled_from(MUTATIONS + [mutate_malformed]), label="mutation")(mutant, data))
    options = []
    if data.draw(st.booleans(), label="keep_post_bn"):
        options.append("--keep-post-bn")
    validate = data.draw(st.booleans(), label="validate")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source, out, report = folder / "in.onnx", folder / "out.onnx", folder / "report.json"
        source.write_bytes(mutant.SerializeToString())
        if data.draw(st.booleans(), label="json"):
            options += ["--json", report]
        before = _files(folder)
        extra = ["--validate", "--provider", "cpu"] if validate else []
        code, stdout, stderr = _run_cli(["optimize", *options, *extra, source, out])
        event(f"exit {code}")
        assert code in DOCUMENTED_EXIT_CODES, stderr
        assert source.read_bytes() == before["in.onnx"]
        after = _files(folder)
        if code != 0:
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("qarep-onnx: error:"), stderr
            written = set(after) - set(before)
            assert written <= ({"report.json"} if code == 4 else set()), written
            return
        assert set(after) - set(before) <= {"out.onnx", "report.json"}
        optimized = onnx.load(out)
        if _checker_passes(mutant):
            assert _checker_passes(optimized), "the output fails the checker although the input passed"
        code2, _, stderr2 = _run_cli(["optimize", *[o for o in options if o != "--json" and o != report],
                                      out, folder / "again.onnx"])
        assert code2 == 0, stderr2
        assert (folder / "again.onnx").read_bytes() == out.read_bytes(), "a second run changed the model"
