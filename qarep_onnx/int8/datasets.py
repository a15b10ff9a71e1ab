"""Which input sets calibrate and which measure: the user's files, split, or seeded random sets.

Calibration and evaluation never share a set.  With ``--holdout`` files, those measure and every
``--calib`` file calibrates.  Without, the ``--calib`` files are split in the order given: the last
:func:`holdout_count` of them (a fifth, at least one) are held out, and the report names them; one
file alone cannot be split and is an error.  Files follow the validation command's conventions
(``.npz`` keyed by input name, ``.npy`` for a one-input model: :mod:`qarep_onnx.inputs`); a folder
stands for every such file in it, in name order.

The first :data:`~.calibrate.SELECTION_SETS` calibration sets also *select* (rank layers, choose
those kept in float, decide on equalization); the held-out sets only confirm and measure.

Without files, ``samples`` calibration sets and :data:`RANDOM_HOLDOUT` held-out sets are drawn,
all standard normal noise (one seed per set, so the two never coincide).  Activation ranges of
noise are not those of real data, so the figures then say little about a real deployment, and the
report says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import onnx

from ..errors import UsageError
from ..runtime.inputs import InputSet, load_input_sets, random_input_sets
from .calibrate import SELECTION_SETS
from .report import Inputs

RANDOM_HOLDOUT = 2
RANDOM_NOTE = (
    "random inputs: activation ranges of standard normal noise are not those of real data, so these end-to-end "
    "figures mean little; give real inputs as calibration files (--calib; calib= in Python)"
)


def holdout_count(n: int) -> int:
    """How many of ``n`` calibration files are held out: a fifth, at least one."""
    return max(1, n // 5)


def _expanded(items: Sequence[str | os.PathLike | InputSet], option: str) -> list[str | os.PathLike | InputSet]:
    """A folder stands for every ``.npz`` and ``.npy`` file in it, in name order."""
    out: list[str | os.PathLike | InputSet] = []
    for item in items:
        if not isinstance(item, InputSet) and Path(item).is_dir():
            files = sorted(p for p in Path(item).iterdir() if p.suffix in (".npz", ".npy") and p.is_file())
            if not files:
                raise UsageError("the folder holds no .npz or .npy file", option=option, value=item)
            out.extend(files)
        else:
            out.append(item)
    return out


def _sets(model: onnx.ModelProto, items: Sequence[str | os.PathLike | InputSet], option: str) -> list[InputSet]:
    items = _expanded(items, option)
    files = [i for i in items if not isinstance(i, InputSet)]
    loaded = iter(load_input_sets(model, files, option)) if files else iter(())
    return [i if isinstance(i, InputSet) else next(loaded) for i in items]


def choose_inputs(
    model: onnx.ModelProto,
    calib: Sequence[str | os.PathLike | InputSet] | None,
    holdout: Sequence[str | os.PathLike | InputSet] | None,
    samples: int = 4,
    seed: int = 0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[list[InputSet], list[InputSet], Inputs]:
    """(calibration sets, held-out sets, their description for the report)."""
    if holdout and not calib:
        raise UsageError("held-out sets need calibration sets too: calibrating on random noise and measuring on real "
                         "data would mislead; give them", option="calib", example="FILE")
    if calib:
        sets = _sets(model, list(calib), "calib")
        if holdout:
            held = _sets(model, list(holdout), "holdout")
            note = f"{len(sets)} calibration set(s) calibrate; {len(held)} held-out set(s) measure"
            calibration = sets
        else:
            if len(sets) < 2:
                raise UsageError("one calibration file cannot be split into calibration and held-out sets; give more "
                                 "calibration files or held-out ones", option="holdout", example="FILE")
            k = holdout_count(len(sets))
            calibration, held = sets[:-k], sets[-k:]
            note = (f"the last {k} of {len(sets)} calibration files are held out to measure "
                    f"({', '.join(s.description.removeprefix('file ') for s in held)}); the others calibrate")
        return calibration, held, _described(calibration, held, False, note)
    if samples < 1:
        raise UsageError("draw at least one calibration set", option="samples", value=samples)
    calibration = [_normal(model, seed + k, input_shapes, "calibration", k) for k in range(samples)]
    held = [_normal(model, seed + samples + k, input_shapes, "held-out", k) for k in range(RANDOM_HOLDOUT)]
    note = f"{samples} random normal sets calibrate, {RANDOM_HOLDOUT} others measure (seeds {seed}..{seed + samples + RANDOM_HOLDOUT - 1})"
    return calibration, held, _described(calibration, held, True, note)


def _described(calibration: list[InputSet], held: list[InputSet], random: bool, note: str) -> Inputs:
    selection = tuple(s.description for s in calibration[:SELECTION_SETS])
    return Inputs(tuple(s.description for s in calibration), tuple(s.description for s in held), random, note, selection)


def _normal(model, seed, input_shapes, role, k) -> InputSet:
    drawn = random_input_sets(model, 1, seed, input_shapes)[0]  # the first sample of a seed is standard normal
    return InputSet(drawn.feeds, f"random normal (seed {seed}, {role} {k + 1})")
