"""What the INT8 analysis found, as plain data with ``to_dict()`` (JSON-ready, versioned).

Nothing here prints or computes; :mod:`.render` turns these into lines and the CLI prints them.
Non-finite figures (an SQNR of +inf when nothing moved) are written as ``null`` in JSON.

Schema version :data:`INT8_SCHEMA_VERSION` (``"schema": "qarep-onnx.int8"`` for ``qarep-onnx int8``,
``"schema": "qarep-onnx.quantize"`` for ``qarep-onnx quantize``); the README lists the fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..fold.report import Report

INT8_SCHEMA_VERSION = 1


def _number(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


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
            "name": self.name,
            "op_type": self.op_type,
            "weight": self.weight,
            "shape": list(self.shape),
            "axis": self.axis,
            "weight_min": self.weight_min,
            "weight_max": self.weight_max,
            "spread": _number(self.spread),
            "sqnr_per_tensor_db": _number(self.sqnr_per_tensor_db),
            "sqnr_per_channel_db": _number(self.sqnr_per_channel_db),
            "worst_channel_per_tensor_db": _number(self.worst_channel_per_tensor_db),
            "outlier": self.outlier,
            "reasons": list(self.reasons),
            "from_fold": self.from_fold,
        }


@dataclass(frozen=True)
class OutputQuality:
    """One model output, FP32 against INT8, over every held-out input set together."""

    name: str
    sqnr_db: float
    cosine: float
    max_abs_error: float

    def to_dict(self) -> dict:
        return {"name": self.name, "sqnr_db": _number(self.sqnr_db), "cosine": self.cosine,
                "max_abs_error": _number(self.max_abs_error)}


@dataclass(frozen=True)
class Measurement:
    """The end-to-end quality of one Q/DQ model: per output, and the worst output's SQNR."""

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
        return {"sqnr_db": _number(self.sqnr_db), "cosine": self.cosine, "excluded": list(self.excluded),
                "outputs": [o.to_dict() for o in self.outputs]}


@dataclass(frozen=True)
class Inputs:
    """Which input sets calibrated the activation ranges and which measured the result."""

    calibration: tuple[str, ...]
    holdout: tuple[str, ...]
    random: bool  # random inputs, not the user's: the figures then mean little
    note: str = ""  # how the sets were chosen, in words

    def to_dict(self) -> dict:
        return {"calibration": list(self.calibration), "holdout": list(self.holdout), "random": self.random,
                "note": self.note}


@dataclass(frozen=True)
class LayerSensitivity:
    """What quantizing one layer alone (everything else in float) costs end to end."""

    name: str
    sqnr_db: float  # end-to-end SQNR with only this layer quantized
    activation_sqnr_db: float  # its input quantized per tensor with the calibrated scale, on the held-out sets
    weight_sqnr_db: float  # its weight quantized per output channel

    def to_dict(self) -> dict:
        return {"name": self.name, "sqnr_db": _number(self.sqnr_db),
                "activation_sqnr_db": _number(self.activation_sqnr_db), "weight_sqnr_db": _number(self.weight_sqnr_db)}


@dataclass(frozen=True)
class Sensitivity:
    """Layers ranked by cost (most costly first), and the greedy set to keep in float."""

    target_sqnr_db: float
    ranking: tuple[LayerSensitivity, ...]
    not_measured: tuple[str, ...]  # layers beyond the cap (their predicted figures were the best)
    max_layers: int
    steps: tuple[Measurement, ...]  # after each layer added to the float set, in order
    suggested: tuple[str, ...]  # the smallest prefix of the ranking that reached the target
    reached: bool

    def to_dict(self) -> dict:
        return {
            "target_sqnr_db": self.target_sqnr_db,
            "max_layers": self.max_layers,
            "ranking": [r.to_dict() for r in self.ranking],
            "not_measured": list(self.not_measured),
            "steps": [s.to_dict() for s in self.steps],
            "suggested_exclude": list(self.suggested),
            "reached": self.reached,
        }


@dataclass(frozen=True)
class ActivationRange:
    """The calibrated range of one layer input (symmetric: scale = max(|low|, |high|) / 127)."""

    tensor: str
    low: float
    high: float

    @property
    def absmax(self) -> float:
        return max(abs(self.low), abs(self.high))


@dataclass
class ModelAnalysis:
    """Every figure of one model: the model as given, or its folded form."""

    label: str  # "as given" or "folded"
    layers: list[LayerWeights] = field(default_factory=list)
    inputs: Inputs | None = None
    quantized: Measurement | None = None  # every layer quantized
    sensitivity: Sensitivity | None = None
    with_suggestion: Measurement | None = None  # the suggested layers kept in float
    skipped: str = ""  # why the end-to-end figures are missing, in words

    @property
    def outliers(self) -> list[LayerWeights]:
        return [layer for layer in self.layers if layer.outlier]

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "layers": [layer.to_dict() for layer in self.layers],
            "inputs": self.inputs.to_dict() if self.inputs else None,
            "quantized": self.quantized.to_dict() if self.quantized else None,
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
            "with_suggestion": self.with_suggestion.to_dict() if self.with_suggestion else None,
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
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "schema": "qarep-onnx.int8",
            "schema_version": INT8_SCHEMA_VERSION,
            "provider": self.provider,
            "blocks_unfolded": self.blocks_unfolded,
            "regions_unfolded": self.regions_unfolded,
            "model": self.model.to_dict(),
            "folded": self.folded.to_dict() if self.folded else None,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class QDQLayout:
    """What the written Q/DQ model holds, read back from its nodes."""

    qdq_pairs: int  # QuantizeLinear -> DequantizeLinear pairs
    quantized_layers: tuple[str, ...]
    float_layers: tuple[str, ...]  # layers whose inputs carry no Q/DQ
    opset: int

    def to_dict(self) -> dict:
        return {"qdq_pairs": self.qdq_pairs, "quantized_layers": list(self.quantized_layers),
                "float_layers": list(self.float_layers), "opset": self.opset}


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
    provider: str = "cpu"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "schema": "qarep-onnx.quantize",
            "schema_version": INT8_SCHEMA_VERSION,
            "provider": self.provider,
            "fold": self.fold.to_dict() if self.fold is not None else None,
            "exclude_mode": self.exclude_mode,
            "excluded": list(self.excluded),
            "layout": self.layout.to_dict(),
            "inputs": self.inputs.to_dict(),
            "measurement": self.measurement.to_dict(),
            "all_quantized": self.all_quantized.to_dict() if self.all_quantized else None,
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
            "notes": list(self.notes),
        }
