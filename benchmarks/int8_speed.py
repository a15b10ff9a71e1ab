"""How long the INT8 commands take on large networks, and that the fast search decides as the exhaustive one does.

Wall time of each command in a fresh process (``python -m qarep_onnx -q ...``, the whole command:
loading, folding, calibration, every measurement, writing), on onnxruntime's CPU provider:

* YOLO-NAS-S (super-gradients, random weights, 640x640; ``--yolonas PATH``, exported with
  ``benchmarks/export_yolonas_s.py``): ``int8`` (the full report with sensitivity) and ``quantize
  --exclude auto``, random normal inputs (4 calibrate, 2 measure);
* PaddleOCR's PP-OCRv4 text detector at 480x640 (``--det-model PATH``, else taken out of the
  rapidocr-onnxruntime wheel): the same two commands, calibrated on 16 rendered text images and
  measured on 8 others (the last a scanned page), from ``int8_data.py``.

Then, on the small fixtures (random inputs), the fast search and ``--exhaustive`` (every prefix of
the ranking, every layer tried back in int8, every confirmation prefix) for several targets: the
layers kept in float must be identical.

With ``--compare-tree PATH`` (another checkout, e.g. ``git worktree add /tmp/before COMMIT``) each
command also runs with that checkout's ``qarep_onnx``, in turn with this one (``--repeat N`` times
each), so both see the same load on a shared machine.

    python benchmarks/int8_speed.py [--yolonas PATH] [--det-model PATH] [--skip-large] [--compare-tree PATH] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_data import det_model, text_sets  # noqa: E402

from qarep_onnx.int8 import quantize  # noqa: E402

REPOSITORY = Path(__file__).resolve().parent.parent
FIXTURES = REPOSITORY / "fixtures"
SMALL = (("int8_outlier", (30, 35, 40)), ("net_repvgg_a0_small", (33, 36)), ("qarep_detector", (28, 30, 32)),
         ("net_fastvit_small", (25, 28)))


def timed(args: list[str], label: str, folder: Path, tree: Path | None = None) -> dict:
    """Run one command in a fresh process (with ``tree``'s qarep_onnx first on the path when given); its wall
    time and the JSON report it wrote."""
    report = folder / f"{label}.json"
    # Run from the scratch folder: ``python -m`` puts the working directory first on the path, and a checkout there
    # would shadow the one asked for.
    env = dict(os.environ, PYTHONPATH=str(tree or REPOSITORY))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "qarep_onnx", "-q", *args, "--json", str(report)], capture_output=True,
                          text=True, env=env, cwd=folder)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{label}: exit {done.returncode}: {done.stderr.strip()}")
    return {"seconds": elapsed, "report": json.loads(report.read_text())}


def _summary(document: dict) -> str:
    analysis = document.get("folded") or document.get("model") or {}
    s = analysis.get("sensitivity") or document.get("sensitivity") or {}
    return (f"{len(s.get('ranking', []))} ranked, {len(s.get('selected', []))} selected, {len(s.get('suggested_exclude', []))} "
            f"confirmed, {s.get('measurements', 0)} candidates measured")


def large(args, folder: Path) -> None:
    cases = []
    if args.yolonas:
        # Every layer in int8 reaches the default 30 dB on this random-weight network: a target of 80 dB
        # forces the whole selection (ranking, search, confirmation) too.
        cases.append(("YOLO-NAS-S 640x640, random inputs", args.yolonas, [], True))
    det = args.det_model or det_model()
    calib, held = text_sets(folder / "ocr")
    files = [a for p in calib for a in ("--calib", str(p))] + [a for p in held for a in ("--holdout", str(p))]
    cases.append(("PP-OCRv4 det 480x640, 16+8 text images", det, files, False))
    trees = [("this checkout", None)] + ([(f"{args.compare_tree.name}", args.compare_tree)] if args.compare_tree else [])
    print("| network | command | " + " | ".join(f"seconds ({name})" for name, _ in trees) + " | what it did |")
    print("|" + " --- |" * (3 + len(trees)))
    for label, model, inputs, forced in cases:
        quantize_auto = ["quantize", "--exclude", "auto", *inputs, str(model), str(folder / "q.onnx")]
        commands = [("int8", ["int8", *inputs, str(model)]), ("quantize --exclude auto", quantize_auto)]
        commands += [("quantize --exclude auto --target-sqnr 80", [*quantize_auto[:3], "--target-sqnr", "80", *quantize_auto[3:]])] if forced else []
        for name, command in commands:
            times = {tree_name: [] for tree_name, _ in trees}
            summary = ""
            for _ in range(args.repeat):  # interleaved: each tree in turn, so both see the same machine load
                for tree_name, tree in trees:
                    result = timed(command, f"{name.split()[0]}_{len(label)}", folder, tree)
                    times[tree_name].append(result["seconds"])
                    summary = summary or _summary(result["report"])
            cells = " | ".join(" / ".join(f"{t:.1f}" for t in times[tree_name]) for tree_name, _ in trees)
            print(f"| {label} | `{name}` | {cells} | {summary} |", flush=True)


def verdicts() -> None:
    manifest = {(e["name"], e["exporter"]): e for e in json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]}
    print("\n| fixture | target dB | fast: kept in float | exhaustive: kept in float | same | candidates fast / exhaustive |")
    print("| --- | --- | --- | --- | --- | --- |")
    same_everywhere = True
    for name, targets in SMALL:
        path = FIXTURES / manifest[(name, "torchscript")]["file"]
        for target in targets:
            runs = [quantize(path, exclude="auto", target_sqnr=target, exhaustive=flag, provider="cpu") for flag in (False, True)]
            kept = [r.report.excluded for r in runs]
            same = kept[0] == kept[1]
            same_everywhere &= same
            counts = [r.report.sensitivity.measurements for r in runs]
            print(f"| {name} | {target} | {len(kept[0])} | {len(kept[1])} | {'yes' if same else 'NO'} | {counts[0]} / {counts[1]} |",
                  flush=True)
    print(f"\nfast and exhaustive verdicts identical on every case: {'yes' if same_everywhere else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--yolonas", type=Path, help="YOLO-NAS-S export (benchmarks/export_yolonas_s.py)")
    parser.add_argument("--det-model", type=Path, help="ch_PP-OCRv4_det_infer.onnx")
    parser.add_argument("--skip-large", action="store_true", help="only the fast-against-exhaustive verdicts")
    parser.add_argument("--compare-tree", type=Path, help="another checkout of this repository, timed in turn with this one")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command (and tree)")
    args = parser.parse_args()
    if not args.skip_large:
        with tempfile.TemporaryDirectory() as folder:
            large(args, Path(folder))
    verdicts()


if __name__ == "__main__":
    main()
