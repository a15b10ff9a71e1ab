"""Verdicts that must not mislead: small outputs, infinities, outputs that are not numbers, folds behind
scale-invariant operators, mixed precision, free (-1) dimensions."""

import numpy as np
import onnx
import pytest
from helpers.builders import BlockSpec, GraphBuilder, qarep_block, qarep_model
from helpers.checks import cli
from onnx import TensorProto, helper, numpy_helper

import qarep_onnx


def _scaled_weight(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """A copy whose first Conv weight is ``factor`` times the original's: a broken fold."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    conv = next(n for n in broken.graph.node if n.op_type == "Conv")
    weight = next(t for t in broken.graph.initializer if t.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), weight.name))
    return broken


def test_an_output_of_tiny_values_is_judged_at_its_own_scale():
    b = GraphBuilder(seed=51)
    x = b.input([1, 4, 6, 6])
    model = b.model([b.op("Add", [b.conv(x, 4, 4, 3), b.conv(x, 4, 4, 1, pad=0)])])
    for t in model.graph.initializer:  # outputs of about 1e-7
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(1e-7), t.name))
    assert qarep_onnx.optimize(model, validate=True, provider="cpu").report.validation.passed
    verdict = qarep_onnx.validate(model, _scaled_weight(model, 1.5), provider="cpu")
    assert verdict.status == "failed" and verdict.worst.max_abs_reference < 1e-5


def _masked(seed=52):
    """A block whose output a constant -inf mask hides in places (attention masks look like this)."""
    b = GraphBuilder(seed=seed)
    x = b.input([1, 4, 6, 6])
    mask = np.zeros((1, 4, 6, 6), np.float32)
    mask[..., :2] = -np.inf
    return b.model([b.op("Add", [b.batch_norm(b.conv(x, 4, 4, 3, bias=False), 4), b.const(mask, "mask")])])


def test_a_minus_infinity_mask_neither_widens_the_floor_nor_hides_a_broken_fold():
    model = _masked()
    result = qarep_onnx.optimize(model, validate=True, provider="cpu")
    floors = [o.noise_floor for o in result.report.validation.outputs]
    assert all(f is not None and np.isfinite(f) for f in floors)
    assert qarep_onnx.validate(model, _scaled_weight(model, 1.5), provider="cpu").status == "failed"


def _with_labels(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with one more output: the index of each position's largest channel, as text."""
    y = model.graph.output[0].name
    model.graph.node.extend([
        helper.make_node("ArgMax", [y], ["best"], axis=1),
        helper.make_node("Cast", ["best"], ["labels"], to=TensorProto.STRING),
    ])
    model.graph.output.append(helper.make_tensor_value_info("labels", TensorProto.STRING, None))
    return model


def test_a_string_output_is_compared_for_equality(tmp_path):
    model = _with_labels(qarep_model(BlockSpec(bn_3x3="separate")))
    verdict = qarep_onnx.optimize(model, validate=True, provider="cpu").report.validation
    labels = next(o for o in verdict.outputs if o.name == "labels")
    assert verdict.passed and labels.by_equality and labels.max_abs_error == 0
    assert any("'labels' holds no numbers" in n for n in verdict.notes)
    assert qarep_onnx.validate(model, _scaled_weight(model, 2.0), provider="cpu").status == "failed"
    path = tmp_path / "labels.onnx"
    onnx.save(model, path)
    run = cli("optimize", "--validate", "--provider", "cpu", "--json", tmp_path / "r.json", path, tmp_path / "o.onnx")
    assert run.returncode == 0, run.stderr


def test_folds_behind_scale_invariant_operators_are_not_blamed_on_the_inputs():
    b = GraphBuilder(seed=53)
    x = b.input([1, 8, 6, 6])
    residual = b.op("Add", [b.batch_norm(b.conv(x, 8, 8, 3, bias=False), 8), x])  # one Conv once folded
    normalized = b.op("LayerNormalization", [residual, b.const(np.ones(6), "g"), b.const(np.zeros(6), "b")],
                      axis=-1, epsilon=1e-12)
    winner = b.op("ArgMax", [b.batch_norm(b.conv(x, 8, 8, 1, pad=0), 8)], axis=1)
    model = b.model([normalized, winner])
    result = qarep_onnx.optimize(model, validate=True, provider="cpu")
    assert result.report.regions_folded == 2 and result.report.validation.status == "passed"


def _half_precision_loop():
    """float32 in and out, a float16 QARepVGG block inside a Loop body (a mixed-precision export)."""
    outer = GraphBuilder(seed=54)
    x = outer.input([1, 8, 8, 8])
    outer.inputs.append(helper.make_tensor_value_info("trips", TensorProto.INT64, []))
    outer.initializers.append(numpy_helper.from_array(np.array(True), "go"))
    half = outer.op("Cast", [x], to=TensorProto.FLOAT16)
    body = GraphBuilder(seed=55, dtype=np.float16)
    out = qarep_block(body, "state", BlockSpec(bn_3x3="separate", alpha="scalar"))
    body.nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    graph = helper.make_graph(
        body.nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state", TensorProto.FLOAT16, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(out, TensorProto.FLOAT16, [1, 8, 8, 8])],
        body.initializers,
    )
    looped = outer.op("Loop", ["trips", "go", half], body=graph)
    return outer.model([outer.op("Cast", [looped], to=TensorProto.FLOAT)])


def test_a_float16_block_in_a_float32_model_is_validated_where_it_runs(tmp_path):
    model = _half_precision_loop()
    result = qarep_onnx.optimize(model, validate=True, provider="cpu")
    assert result.report.blocks_folded == 1 and result.report.validation.passed
    x = np.random.default_rng(5).standard_normal((1, 8, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "none.npz", x=x, trips=np.array(0, np.int64))
    with pytest.raises(qarep_onnx.ValidationError, match="never reached"):
        qarep_onnx.optimize(model, validate=True, provider="cpu", inputs=[tmp_path / "none.npz"])


def test_a_dimension_written_as_minus_one_is_free(tmp_path):
    model = qarep_model(BlockSpec(bn_3x3="separate"))
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[2].dim_value = -1
        value.type.tensor_type.shape.dim[3].dim_value = -1
    path = tmp_path / "free.onnx"
    onnx.save(model, path)
    shaped = cli("optimize", "--validate", "--provider", "cpu", "--input-shape", "x:1x8x6x6", path, tmp_path / "a.onnx")
    assert shaped.returncode == 0, shaped.stderr
    np.savez(tmp_path / "x.npz", x=np.ones((1, 8, 5, 7), np.float32))
    filed = cli("optimize", "--validate", "--provider", "cpu", "--inputs", tmp_path / "x.npz", path, tmp_path / "b.onnx")
    assert filed.returncode == 0, filed.stderr
    unshaped = cli("optimize", "--validate", "--provider", "cpu", path, tmp_path / "c.onnx")
    assert unshaped.returncode == 2 and "--input-shape x:1x8x1x1" in unshaped.stderr


def test_many_input_sets_are_walked_one_at_a_time():
    model = qarep_model(BlockSpec(bn_3x3="separate"))
    verdict = qarep_onnx.optimize(model, validate=True, provider="cpu", samples=12).report.validation
    assert verdict.passed and len(verdict.samples) == 12 and len(set(verdict.samples)) == 12


# -- the floor's one-ulp copy: every weight moved, wherever it is held ----------------------------------------


@pytest.mark.parametrize("constants", ["initializer", "constant"])
def test_the_one_ulp_copy_moves_every_weight_once(constants):
    """Weights in initializers: the original's file serves, its weights replaced as the session opens;
    weights in Constant nodes: a copy is written.  Either way every float weight moved one ulp, no more."""
    from qarep_onnx.runtime.models import prepare_original
    from qarep_onnx.runtime.providers import select_provider
    from qarep_onnx.runtime.sessions import Workspace, open_session

    model = qarep_model(BlockSpec(), seed=61, constants=constants)
    with Workspace() as ws:
        prepared = prepare_original(model, ws, select_provider("cpu"), True, seed=0)
        assert (prepared.perturbed.overrides is not None) == (constants == "initializer")
        moved = ({n: v for n, v in prepared.perturbed.overrides().items()} if constants == "initializer" else
                 {t.name: numpy_helper.to_array(t) for t in onnx.load(str(prepared.perturbed.path)).graph.initializer}
                 | {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in onnx.load(str(prepared.perturbed.path)).graph.node
                    if n.op_type == "Constant"})
        originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        originals |= {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"}
        weights = {name for name, v in originals.items() if v.dtype == np.float32 and v.size}
        assert weights and weights <= set(moved)
        for name in weights:
            step = np.abs(moved[name].astype(np.float64) - originals[name])
            assert np.all(step > 0) and np.all(step <= np.spacing(np.abs(originals[name])) * 1.0001), name
        x = {"x": np.random.default_rng(0).standard_normal((1, 8, 8, 8)).astype(np.float32)}
        a = open_session(prepared.file, select_provider("cpu")).run(None, x)[0]
        b = open_session(prepared.perturbed, select_provider("cpu")).run(None, x)[0]
        assert 0 < np.abs(a - b).max() < 1e-4 * np.abs(a).max()
