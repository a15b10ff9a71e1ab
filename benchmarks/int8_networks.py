"""INT8 on whole networks: end-to-end SQNR of the unfolded export, its fold and PyTorch's native fold,
the layers to keep in float, and how long ``qarep-onnx int8`` takes.

For each network fixture (TorchScript export unless told), in one process on onnxruntime's CPU:

* ``int8_report`` on the unfolded export, timed (it analyses the export and its folded form: weight
  report, calibration, every layer in int8, per-layer sensitivity, the greedy set), and timed again
  with ``sensitivity=False``;
* the native export (the PyTorch module's own fold) quantized the same way, as a cross-check of the fold;
* a float32 probe: the output SQNR when the *input* alone gets noise at 40 dB SQNR, to show how much
  the network itself amplifies small perturbations (random-weight networks can amplify a lot).

Inputs are seeded random normal sets (4 calibrate, 2 measure): the fixtures have no real data, so
the SQNR figures compare forms of the same network, not deployments.

    python benchmarks/int8_networks.py [--exporter torchscript] [--target-sqnr 30] [--max-layers 32]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import onnx

from qarep_onnx.runtime.inputs import random_input_sets
from qarep_onnx.int8 import int8_report
from qarep_onnx.runtime.sessions import run

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NETWORKS = ("net_repvgg_a0_small", "net_mobileone_s0_small", "net_fastvit_small", "qarep_detector", "yolonas_deep")


def input_noise_probe(model: onnx.ModelProto, input_sqnr_db: float = 40.0) -> float:
    """Worst output SQNR (dB) of the float model when its input gets white noise at ``input_sqnr_db``."""
    feeds = random_input_sets(model, 1, 100)[0].feeds
    rng = np.random.default_rng(0)
    noisy = {}
    for name, x in feeds.items():
        sigma = math.sqrt(float(np.mean(x.astype(np.float64) ** 2)) / 10 ** (input_sqnr_db / 10))
        noisy[name] = (x + sigma * rng.standard_normal(x.shape)).astype(x.dtype)
    a, b = run(model, feeds), run(model, noisy)
    worst = math.inf
    for name in a:
        ref = a[name].astype(np.float64)
        worst = min(worst, 10 * math.log10(float((ref**2).sum()) / float(((ref - b[name]) ** 2).sum())))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exporter", default="torchscript", choices=("torchscript", "torchscript_nofold", "dynamo"))
    parser.add_argument("--target-sqnr", type=float, default=30.0)
    parser.add_argument("--max-layers", type=int, default=32)
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS))
    args = parser.parse_args()

    manifest = json.loads((FIXTURES / "manifest.json").read_text())["fixtures"]
    print(f"onnxruntime CPU; random normal inputs (4 calibrate, 2 measure); SQNR of the worst output in dB, every "
          f"layer in int8 unless said; target {args.target_sqnr:g} dB, at most {args.max_layers} layers measured")
    head = (f"{'network':<24} {'layers':>9} {'unfolded':>9} {'folded':>7} {'native':>7} "
            f"{'float kept -> SQNR':>19} {'40 dB in':>9} {'report s':>9} {'no sens. s':>10}")
    print(head)
    for name in args.networks:
        entry = next(e for e in manifest if e["name"] == name and e["exporter"] == args.exporter)
        path = FIXTURES / entry["file"]
        model = onnx.load(path)
        start = time.perf_counter()
        report = int8_report(model, provider="cpu", target_sqnr=args.target_sqnr, max_layers=args.max_layers)
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        int8_report(model, provider="cpu", sensitivity=False)
        quick = time.perf_counter() - start
        native = int8_report(FIXTURES / entry["native_file"], provider="cpu", sensitivity=False)
        folded = report.folded or report.model
        s = folded.sensitivity
        kept = f"{len(s.suggested)} -> {folded.with_suggestion.sqnr_db:.1f}" + ("" if s.reached else " (miss)")
        layers = f"{len(report.model.layers)}/{len(folded.layers)}"
        print(f"{name:<24} {layers:>9} {report.model.quantized.sqnr_db:>9.1f} {folded.quantized.sqnr_db:>7.1f} "
              f"{native.model.quantized.sqnr_db:>7.1f} {kept:>19} {input_noise_probe(model):>9.1f} {elapsed:>9.2f} {quick:>10.2f}")
    print("layers: unfolded/folded; native: PyTorch's own fold, quantized alike; float kept: layers the greedy set keeps "
          "in float for the folded model (miss: target not reached); 40 dB in: FP32 output SQNR with noise on the "
          "input alone; report s: int8_report on the unfolded export (both forms, with sensitivity); no sens.: without it")


if __name__ == "__main__":
    main()
