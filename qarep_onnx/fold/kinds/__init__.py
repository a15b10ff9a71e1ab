"""The kinds of leaf operators a region can fold into, and the one rule for summing branches of them.

:data:`KINDS` lists them; everything that differs between operator families lives in their
modules (:mod:`.conv`, :mod:`.conv_transpose`, :mod:`.dense`), behind :class:`.base.LeafKind`.
"""

from __future__ import annotations

from ...errors import Code, Reason, Refused
from ..algebra import Geometry, channel_sets, diagonal_geometry
from .base import LeafKind
from .conv import CONV
from .conv_transpose import CONV_TRANSPOSE
from .dense import DENSE

KINDS: tuple[LeafKind, ...] = (CONV, CONV_TRANSPOSE, DENSE)


def merge_geometry(geometries: list[Geometry]) -> Geometry:
    """The geometry of a sum of forms over the same X, or :class:`~qarep_onnx.errors.Refused`.

    Diagonal forms (the identity, per-channel affines of X) join any kind; branches of two different
    kinds never sum into one operator.
    """
    kinds = {g.kind for g in geometries if not g.is_diagonal}
    if len(kinds) > 1:
        names = " and ".join(sorted(k.label for k in kinds))
        raise Refused(Reason(Code.MISALIGNED, f"branches of different operators ({names}) cannot be summed into one"))
    if kinds:
        return kinds.pop().merge(geometries)
    cout, _ = channel_sets(geometries)  # only diagonal forms: the sum is diagonal too
    return diagonal_geometry(cout)
