"""Typed errors of the library; the CLI turns each into one line and its exit code."""

from __future__ import annotations


class QarepError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InputModelError(QarepError):
    """The input cannot be read as an ONNX model."""

    exit_code = 2


class OutputPathError(QarepError):
    """The output cannot be written where asked."""

    exit_code = 3


class ValidationError(QarepError):
    """The optimized model does not compute what the original computed; ``report`` says how far."""

    exit_code = 4

    def __init__(self, message: str, report=None) -> None:
        super().__init__(message)
        self.report = report
