"""Export super-gradients' YOLO-NAS-S (random weights, training form: no re-parameterization) to ONNX.

Run with a Python that has super-gradients (it is never a dependency of this project; its pins
clash with ours, so give it its own virtual environment):

    /path/to/sg-venv/bin/python benchmarks/export_yolonas_s.py OUT.onnx [--size 640] [--seed 0]

The export is what a user holds when the ``prep_model_for_conversion`` step was skipped: every
QARepVGG block with its branches and BatchNorms, TorchScript exporter, opset 17, batch 1.  Weights
are super-gradients' random initialization (no pretrained weights are downloaded), so only
comparisons between tools and settings mean something.
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from super_gradients.training import models

    torch.manual_seed(args.seed)
    model = models.get("yolo_nas_s", num_classes=80).eval()
    x = torch.randn(1, 3, args.size, args.size)
    torch.onnx.export(model, (x,), args.out, opset_version=17, input_names=["images"], do_constant_folding=True, dynamo=False)
    print(f"wrote {args.out}: {sum(p.numel() for p in model.parameters())} parameters, input 1x3x{args.size}x{args.size}")


if __name__ == "__main__":
    main()
