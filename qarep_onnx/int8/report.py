"""What the INT8 analysis found, as plain data with ``to_dict()`` (strict JSON, versioned).

Nothing here prints or computes; ``qarep_onnx.cli.int8_render`` turns these into lines of text and
:mod:`.html` into a page.  Every float goes through :func:`finite`: a non-finite figure (an SQNR of
+inf when nothing moved, -inf when a reference of zeros moved) is written as ``null``, so the JSON
never holds ``NaN`` or ``Infinity`` tokens (``json.dumps(..., allow_nan=False)`` succeeds).

Schema version :data:`INT8_SCHEMA_VERSION` (``"schema": "qarep-onnx.int8"`` for ``qarep-onnx int8``,
``"schema": "qarep-onnx.quantize"`` for ``qarep-onnx quantize``); the README lists the fields.
Version 2 adds the settings, the placement, equalization, held-out confirmation of the layers kept
in float (calibration and held-out figures side by side) and the FLOP shapes of ``quantize``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..fold.report import Report

INT8_SCHEMA_VERSION = 2


def finite(x: float | None) -> float | None:
    """``x`` as a JSON number, or None when it is missing or not finite."""
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Settings:
    """How the model was quantized and measured."""

    placement: str = "tensorrt"  # "tensorrt" or "narrow"
    calib_method: str = "percentile"
    percentile: float = 99.99  # used by calib_method "percentile"
    float_precision: str = "fp16"  # the layers left in float, in the measurement
    weights: str = "int8"  # how the written model stores quantized weights
    equalize: bool = False
    exhaustive: bool = False

    def to_dict(self) -> dict:
        return {"placement": self.placement, "calib_method": self.calib_method, "percentile": finite(self.percentile),
                "float_precision": self.float_precision, "weights": self.weights, "equalize": self.equalize,
                "exhaustive": self.exhaustive}


@dataclass(frozen=True)
class LayerWeights:
    """The weight figures of one layer (no calibration needed)."""

    name: str
    op_type: str
    weight: str  # the initializer's name
    shape: tuple[int, ...]
    axis: int  # output-channel axis
    weight_min: float
    weight_max: float
    spread: float  # max channel absmax / median channel absmax
    sqnr_per_tensor_db: float  # whole tensor, one scale
    sqnr_per_channel_db: float  # whole tensor, one scale per output channel
    worst_channel_per_tensor_db: float  # the channel a per-tensor scale serves worst
    outlier: bool
    reasons: tuple[str, ...] = ()  # why it is flagged, in words
    from_fold: bool = False  # written by the fold (a block or a Conv+BN chain merged into this Conv)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "op_type": self.op_type, "weight": self.weight, "shape": list(self.shape), "axis": self.axis,
            "weight_min": finite(self.weight_min), "weight_max": finite(self.weight_max), "spread": finite(self.spread),
            "sqnr_per_tensor_db": finite(self.sqnr_per_tensor_db), "sqnr_per_channel_db": finite(self.sqnr_per_channel_db),
            "worst_channel_per_tensor_db": finite(self.worst_channel_per_tensor_db), "outlier": self.outlier,
            "reasons": list(self.reasons), "from_fold": self.from_fold,
        }


@dataclass(frozen=True)
class OutputQuality:
    """One model output, FP32 against INT8, over every input set of a measurement together."""

    name: str
    sqnr_db: float
    cosine: float
    max_abs_error: float
    nonfinite: int = 0  # positions where the FP32 value is not finite (compared by equality, not by power)
    nonfinite_mismatches: int = 0  # of those, positions where INT8 computed something else

    def to_dict(self) -> dict:
        return {"name": self.name, "sqnr_db": finite(self.sqnr_db), "cosine": finite(self.cosine),
                "max_abs_error": finite(self.max_abs_error), "nonfinite": self.nonfinite,
                "nonfinite_mismatches": self.nonfinite_mismatches}


@dataclass(frozen=True)
class Measurement:
    """The end-to-end quality of one candidate: per output, and the worst output's SQNR."""

    outputs: tuple[OutputQuality, ...]
    excluded: tuple[str, ...] = ()  # layers kept in float

    @property
    def sqnr_db(self) -> float:
        """The worst output's SQNR (what a target is held against)."""
        return min((o.sqnr_db for o in self.outputs), default=math.inf)

    @property
    def cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    def to_dict(self) -> dict:
        return {"sqnr_db": finite(self.sqnr_db), "cosine": finite(self.cosine), "excluded": list(self.excluded),
                "outputs": [o.to_dict() for o in self.outputs]}


@dataclass(frozen=True)
class Inputs:
    """Which input sets calibrated, which of them also selected, and which measured the result."""

    calibration: tuple[str, ...]
    holdout: tuple[str, ...]
    random: bool  # random inputs, not the user's: the figures then mean little
    note: str = ""  # how the sets were chosen, in words
    selection: tuple[str, ...] = ()  # calibration sets that rank, select and equalize

    def to_dict(self) -> dict:
        return {"calibration": list(self.calibration), "selection": list(self.selection), "holdout": list(self.holdout),
                "random": self.random, "note": self.note}


@dataclass(frozen=True)
class LayerSensitivity:
    """What quantizing one layer alone (everything else in float) costs end to end, on the ranking sets."""

    name: str
    sqnr_db: float  # end-to-end SQNR with only this layer quantized
    activation_sqnr_db: float  # its input under the calibrated scale, estimated from the calibration statistics
    weight_sqnr_db: float  # its weight quantized per output channel

    def to_dict(self) -> dict:
        return {"name": self.name, "sqnr_db": finite(self.sqnr_db),
                "activation_sqnr_db": finite(self.activation_sqnr_db), "weight_sqnr_db": finite(self.weight_sqnr_db)}


@dataclass(frozen=True)
class CurvePoint:
    """The first ``count`` layers of the selected set kept in float: SQNR on the calibration and held-out sets."""

    count: int
    excluded: tuple[str, ...]
    selection_sqnr_db: float | None  # None where the selection did not measure this prefix (fast mode)
    holdout_sqnr_db: float

    def to_dict(self) -> dict:
        return {"count": self.count, "excluded": list(self.excluded), "selection_sqnr_db": finite(self.selection_sqnr_db),
                "selection_measured": self.selection_sqnr_db is not None, "holdout_sqnr_db": finite(self.holdout_sqnr_db)}


@dataclass(frozen=True)
class Sensitivity:
    """Layers ranked by cost; the set selected on calibration data; what the held-out sets confirmed of it."""

    target_sqnr_db: float
    ranking: tuple[LayerSensitivity, ...]  # most costly first
    not_measured: tuple[str, ...]  # layers beyond the cap, or all when no ranking was needed (quantize, target reached)
    max_layers: int
    ranking_sets: tuple[str, ...]  # the calibration sets the layers were ranked on
    steps: tuple[Measurement, ...]  # candidates measured on the selection sets while selecting, in order
    selected: tuple[str, ...]  # kept in float by the selection (calibration data), most costly first
    reached_selection: bool  # the selected set reaches the target on the selection sets
    curve: tuple[CurvePoint, ...]  # prefixes of ``selected``
    suggested: tuple[str, ...]  # confirmed: the exclusions whose gain held on the held-out sets
    reached: bool  # the confirmed set reaches the target on the held-out sets
    exhaustive: bool = False
    measurements: int = 0  # candidate runs in all (each over its input sets)

    @property
    def dropped(self) -> tuple[str, ...]:
        """Selected on calibration data, but their gain did not hold on the held-out sets."""
        return tuple(n for n in self.selected if n not in set(self.suggested))

    def to_dict(self) -> dict:
        return {
            "target_sqnr_db": self.target_sqnr_db, "max_layers": self.max_layers, "exhaustive": self.exhaustive,
            "ranking_sets": list(self.ranking_sets), "ranking": [r.to_dict() for r in self.ranking],
            "not_measured": list(self.not_measured), "steps": [s.to_dict() for s in self.steps],
            "selected": list(self.selected), "reached_selection": self.reached_selection,
            "curve": [p.to_dict() for p in self.curve], "suggested_exclude": list(self.suggested),
            "dropped": list(self.dropped), "reached": self.reached, "measurements": self.measurements,
        }


@dataclass(frozen=True)
class EqualizedPair:
    """One pair of layers equalization balanced, and the activation between them before and after."""

    first: str
    second: str
    tensor: str
    between: str  # the homogeneous op ("Relu", ...), or "" for none
    channels: int
    spread_before: float  # max channel absmax / median channel absmax of the activation
    spread_after: float
    activation_sqnr_before_db: float  # estimated from the calibration statistics
    activation_sqnr_after_db: float

    def to_dict(self) -> dict:
        return {"first": self.first, "second": self.second, "tensor": self.tensor, "between": self.between,
                "channels": self.channels, "spread_before": finite(self.spread_before),
                "spread_after": finite(self.spread_after),
                "activation_sqnr_before_db": finite(self.activation_sqnr_before_db),
                "activation_sqnr_after_db": finite(self.activation_sqnr_after_db)}


@dataclass(frozen=True)
class Equalization:
    """Cross-layer equalization: the pairs, every layer in int8 before and after, and whether it was kept."""

    pairs: tuple[EqualizedPair, ...]
    selection_before_db: float | None = None
    selection_after_db: float | None = None
    holdout_before_db: float | None = None
    holdout_after_db: float | None = None
    kept: bool = False
    reason: str = ""  # why it was kept or not, in words
    validation: str = ""  # the calibrated float verdict on the equalized model: "passed", "failed", ...
    validation_noise_multiple: float | None = None  # its worst output's error in noise floors

    def to_dict(self) -> dict:
        return {
            "pairs": [p.to_dict() for p in self.pairs], "selection_before_db": finite(self.selection_before_db),
            "selection_after_db": finite(self.selection_after_db), "holdout_before_db": finite(self.holdout_before_db),
            "holdout_after_db": finite(self.holdout_after_db), "kept": self.kept, "reason": self.reason,
            "validation": self.validation or None, "validation_noise_multiple": finite(self.validation_noise_multiple),
        }


@dataclass
class ModelAnalysis:
    """Every figure of one model: the model as given, or its folded form."""

    label: str  # "as given" or "folded"
    layers: list[LayerWeights] = field(default_factory=list)
    inputs: Inputs | None = None
    placement: dict[str, int] = field(default_factory=dict)  # Q/DQ pairs by role with every layer in int8
    quantized: Measurement | None = None  # every layer in int8, on the held-out sets
    quantized_selection: Measurement | None = None  # the same on the selection sets
    equalization: Equalization | None = None
    sensitivity: Sensitivity | None = None
    with_suggestion: Measurement | None = None  # the confirmed layers kept in float, on the held-out sets
    skipped: str = ""  # why the end-to-end figures are missing, in words

    @property
    def outliers(self) -> list[LayerWeights]:
        return [layer for layer in self.layers if layer.outlier]

    def to_dict(self) -> dict:
        def opt(x):
            return x.to_dict() if x is not None else None

        return {
            "label": self.label, "layers": [layer.to_dict() for layer in self.layers], "inputs": opt(self.inputs),
            "placement": dict(self.placement), "quantized": opt(self.quantized),
            "quantized_selection": opt(self.quantized_selection), "equalization": opt(self.equalization),
            "sensitivity": opt(self.sensitivity), "with_suggestion": opt(self.with_suggestion),
            "skipped": self.skipped or None,
        }


@dataclass
class Int8Report:
    """``qarep-onnx int8``: the model as given and, when it still has foldable blocks, folded."""

    model: ModelAnalysis
    folded: ModelAnalysis | None = None
    blocks_unfolded: int = 0  # blocks (two or more branches) the fold merges
    regions_unfolded: int = 0  # all regions the fold replaces by one Conv
    provider: str = "cpu"
    settings: Settings = field(default_factory=Settings)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "schema": "qarep-onnx.int8", "schema_version": INT8_SCHEMA_VERSION, "provider": self.provider,
            "settings": self.settings.to_dict(), "blocks_unfolded": self.blocks_unfolded,
            "regions_unfolded": self.regions_unfolded, "model": self.model.to_dict(),
            "folded": self.folded.to_dict() if self.folded else None, "notes": list(self.notes),
        }


@dataclass(frozen=True)
class QDQLayout:
    """What the written Q/DQ model holds, read back from its nodes."""

    qdq_pairs: int  # DequantizeLinear nodes (each with its QuantizeLinear, or an int8 weight)
    quantized_layers: tuple[str, ...]
    float_layers: tuple[str, ...]  # layers whose inputs carry no Q/DQ
    opset: int
    residual_pairs: int = 0  # on the skip input of an Add fused into a quantized layer
    flow_pairs: int = 0  # on the inputs of pooling, Concat, Resize and reshape-like ops
    int8_weights: bool = False  # weights stored as int8 (else float behind Q/DQ)
    qdq_nodes: int = 0  # QuantizeLinear and DequantizeLinear nodes

    def to_dict(self) -> dict:
        return {"qdq_pairs": self.qdq_pairs, "quantized_layers": list(self.quantized_layers),
                "float_layers": list(self.float_layers), "opset": self.opset, "residual_pairs": self.residual_pairs,
                "flow_pairs": self.flow_pairs, "int8_weights": self.int8_weights, "qdq_nodes": self.qdq_nodes}


@dataclass
class QuantizeReport:
    """``qarep-onnx quantize``: the fold, the layers kept in float and why, and the measured result."""

    fold: Report | None  # None with fold=False
    exclude_mode: str  # "none", "explicit" or "auto"
    excluded: tuple[str, ...]
    layout: QDQLayout
    inputs: Inputs
    measurement: Measurement  # the written model, FP32 against INT8 on the held-out sets
    all_quantized: Measurement | None = None  # for comparison, when layers were kept in float
    sensitivity: Sensitivity | None = None  # with --exclude auto
    equalization: Equalization | None = None  # with --equalize
    settings: Settings = field(default_factory=Settings)
    flops_shapes: dict[str, tuple[int, ...]] | None = None  # input shapes the FLOP estimate used, when not the model's own
    provider: str = "cpu"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "schema": "qarep-onnx.quantize", "schema_version": INT8_SCHEMA_VERSION, "provider": self.provider,
            "settings": self.settings.to_dict(), "fold": self.fold.to_dict() if self.fold is not None else None,
            "flops_shapes": {k: list(v) for k, v in self.flops_shapes.items()} if self.flops_shapes else None,
            "exclude_mode": self.exclude_mode, "excluded": list(self.excluded), "layout": self.layout.to_dict(),
            "inputs": self.inputs.to_dict(), "measurement": self.measurement.to_dict(),
            "all_quantized": self.all_quantized.to_dict() if self.all_quantized else None,
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
            "equalization": self.equalization.to_dict() if self.equalization else None, "notes": list(self.notes),
        }
