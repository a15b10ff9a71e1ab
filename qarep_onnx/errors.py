"""Typed errors of the library, and the one type that says why a fold was not done.

Errors end a command: the CLI turns each into one line and its ``exit_code``.  A :class:`Reason`
does not: it is data (a :class:`Code` and a sentence) that the fold reports when it leaves a block
as it was, and that the fold core passes around wherever one step tells another why it cannot go
on (an operator that is not linear, branches that cannot be merged, numbers that forbid a fold).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

# How a message names an option of the library's calls (the CLI names them by its flags).
OPTION_WORDS = {
    "inputs": "input file",
    "input_shapes": "input shape",
    "calib": "calibration file",
    "holdout": "held-out file",
    "target_sqnr": "target SQNR",
    "max_layers": "max_layers",
    "calib_method": "calibration method",
    "float_precision": "float precision",
}


class QarepError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with.

    ``option`` names the argument of the library call the error is about (``"inputs"``,
    ``"input_shapes"``, ...), ``value`` the value given for it, and ``example`` a value that would
    do: the message says the rest.  ``str(error)`` words the option as the library's docs do;
    :meth:`render` lets the command line word it as its flag.
    """

    exit_code = 1

    def __init__(self, message: str, *, option: str | None = None, value: object = None, example: str | None = None) -> None:
        self.message = message
        self.option = option
        self.value = value
        self.example = example
        super().__init__(self.render(lambda option: OPTION_WORDS.get(option, option)))

    def render(self, name_of) -> str:
        """The one-line message with the option named by ``name_of(option)``."""
        if self.option is None:
            return self.message
        name = name_of(self.option)
        text = f"{name} {self.value}: {self.message}" if self.value is not None else self.message
        return text + (f", e.g. {name} {self.example}" if self.example is not None else "")


class InputModelError(QarepError):
    """The input cannot be read as an ONNX model, or it is not a valid one."""

    exit_code = 2


class UsageError(QarepError):
    """Options that contradict each other or the model (a wrong input shape, an input file that does not fit)."""

    exit_code = 2


class OutputPathError(QarepError):
    """The output cannot be written where asked, or writing it would destroy another file."""

    exit_code = 3


class ValidationError(QarepError):
    """The optimized model does not compute what the original computed, or that could not be shown;
    ``report`` says how far."""

    exit_code = 4

    def __init__(self, message: str, report=None) -> None:
        super().__init__(message)
        self.report = report


class ProviderError(QarepError):
    """The requested onnxruntime execution provider cannot run on this machine."""

    exit_code = 5


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for one-line errors."""
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


class Code(StrEnum):
    """Why a fold was not done: each refusal code is listed in the README; the block ends are never reported."""

    FAN_OUT = "FAN_OUT"  # a tensor inside the block is read elsewhere
    GRAPH_OUTPUT = "GRAPH_OUTPUT"  # a tensor inside the block is a graph output
    NON_CONSTANT = "NON_CONSTANT"  # a weight, statistic or scale is not a constant
    BN_TRAINING = "BN_TRAINING"  # a BatchNormalization in training mode
    NOT_PER_CHANNEL = "NOT_PER_CHANNEL"  # a constant or normalization on another axis than the channels
    STRIDE_MISMATCH = "STRIDE_MISMATCH"
    MISALIGNED = "MISALIGNED"  # kernels that cannot be centre-aligned, operators that cannot be summed
    EVEN_KERNEL = "EVEN_KERNEL"
    AUTO_PAD = "AUTO_PAD"  # padding that depends on the input size
    BLOCKING_OP = "BLOCKING_OP"  # an operator inside a block that no fold describes (Cast, Q/DQ, Slice, ...)
    PADDED_INPUT_SHIFT = "PADDED_INPUT_SHIFT"  # an affine with a shift in front of padding
    COST = "COST"  # the merged operator would cost more than the branches
    NOT_LINEAR = "NOT_LINEAR"  # a product or quotient of two tensors inside the block
    DIVISION_BY_ZERO = "DIVISION_BY_ZERO"
    NON_FINITE = "NON_FINITE"  # folded weights that are not finite, or overflow the model's type
    PRECISION = "PRECISION"  # folded weights below a narrow type's normal range, coarser than the block's own
    CHANNEL_MISMATCH = "CHANNEL_MISMATCH"
    RANK_MISMATCH = "RANK_MISMATCH"
    POOL_EXCLUDES_PAD = "POOL_EXCLUDES_PAD"
    POOL_CEIL_MODE = "POOL_CEIL_MODE"
    DTYPE = "DTYPE"  # an element type the fold does not compute in
    # Where a block simply ends: not refusals, never reported.
    ENDS_BLOCK = "ENDS_BLOCK"  # a non-linear operator (a Relu ends a block)
    CONSTANT_EXPRESSION = "CONSTANT_EXPRESSION"  # an operator of constants only: nothing of the block's input

    @property
    def is_refusal(self) -> bool:
        """A fold that was possible was not done (as opposed to a block that simply ends here)."""
        return self not in (Code.ENDS_BLOCK, Code.CONSTANT_EXPRESSION)


REFUSAL_CODES = tuple(code for code in Code if code.is_refusal)


@dataclass(frozen=True)
class Reason:
    """Why something was not folded: a stable ``code``, a sentence for people, and where.

    ``nodes`` names the nodes concerned and ``graph`` the graph they are in (``""`` for the main
    graph); a fold step that does not know them yet leaves them empty and its caller adds them
    (:meth:`at`).  The report's refusals are reasons.
    """

    code: Code
    message: str
    nodes: tuple[str, ...] = ()
    graph: str = ""

    def at(self, nodes: tuple[str, ...], graph: str) -> Reason:
        return replace(self, nodes=tuple(nodes), graph=graph)

    def with_message(self, message: str) -> Reason:
        return replace(self, message=message)


class Refused(Exception):
    """A fold step cannot go on; ``reason`` says why (the fold turns it into a refusal, never an error)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.message)
        self.reason = reason
