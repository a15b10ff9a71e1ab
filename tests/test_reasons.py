"""The refusal codes: one enum, the README's table of them, and what reaches a report."""

import re
from pathlib import Path

import qarep_onnx
from qarep_onnx.errors import REFUSAL_CODES, Code

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_refusal_codes() -> set[str]:
    text = README.read_text()
    section = text.split("### What it refuses", 1)[1].split("\n\n", 2)[2]
    table = section.split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {code for row in rows for code in re.findall(r"`([A-Z_]+)`", row.split("|")[1])}


def test_the_readme_lists_exactly_the_refusal_codes():
    assert _readme_refusal_codes() == {c.value for c in REFUSAL_CODES}


def test_block_ends_are_not_refusals():
    assert not Code.ENDS_BLOCK.is_refusal
    assert not Code.CONSTANT_EXPRESSION.is_refusal
    assert Code.NOT_LINEAR.is_refusal and Code.FAN_OUT.is_refusal


def test_a_report_carries_only_refusal_codes():
    path = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "neg_fan_out_3x3__torchscript.onnx"
    report = qarep_onnx.optimize(str(path)).report
    assert report.refusals
    assert all(isinstance(r.code, Code) and r.code.is_refusal for r in report.refusals)
    assert {r["code"] for r in report.to_dict()["refusals"]} == {"FAN_OUT"}
