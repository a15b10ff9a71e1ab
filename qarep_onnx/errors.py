"""Typed errors of the library; the CLI turns each into one line and its exit code."""

from __future__ import annotations


class QarepError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


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
