#!/usr/bin/env bash
# Prove the CUDA path on a GPU machine that has no network: fold and validate the fixtures on CUDA,
# run the validation tests with CUDA selected, and time unfused / folded / native networks.
#
#   bash benchmarks/gpu_check.sh ONNXRUNTIME_GPU_WHEEL_OR_FOLDER [MORE_WHEELS_OR_FOLDERS ...]
#
# Every argument is a wheel (unpacked here with Python's zipfile: no pip, no network) or an already
# unpacked folder; they go on PYTHONPATH in front of what the machine has (its numpy, onnx and
# nvidia-* CUDA 13 / cuDNN 9 wheels).  Pass click's wheel too if the machine lacks it, and pytest's
# (with pluggy, iniconfig, packaging and pygments) to run the tests.
#
#   GPU_CHECK_PROVIDER  cuda (default); cpu dry-runs every step on a machine without a GPU
#   GPU_CHECK_OUT       where models, reports and logs go (default: a new temporary folder)
#   GPU_CHECK_RUNS      timed runs per model for latency (default 200)
set -uo pipefail
cd "$(dirname "$0")/.."

provider=${GPU_CHECK_PROVIDER:-cuda}
out=${GPU_CHECK_OUT:-$(mktemp -d -t qarep-gpu-check.XXXXXX)}
runs=${GPU_CHECK_RUNS:-200}
python=${PYTHON:-python3}
[ $# -ge 1 ] || { echo "usage: $0 ONNXRUNTIME_GPU_WHEEL_OR_FOLDER [MORE ...]" >&2; exit 2; }

mkdir -p "$out/site"
path="$PWD"
for item in "$@"; do
  if [ -d "$item" ]; then
    path="$(cd "$item" && pwd):$path"
  elif [ -f "$item" ]; then
    "$python" -m zipfile -e "$item" "$out/site" || { echo "cannot unpack $item" >&2; exit 2; }
  else
    echo "no such wheel or folder: $item" >&2; exit 2
  fi
done
export PYTHONPATH="$out/site:$path${PYTHONPATH:+:$PYTHONPATH}"
export QAREP_TEST_PROVIDER=$provider

echo "== environment"
"$python" - <<'EOF' || exit 2
import importlib, sys
missing = []
for name in ("numpy", "onnx", "onnxruntime", "click"):
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '?')} ({module.__file__})")
    except ImportError as exc:
        missing.append(f"{name} ({exc})")
if missing:
    sys.exit("missing: " + "; ".join(missing) + " -- pass their wheels as arguments")
import onnxruntime as ort
print("  onnxruntime providers:", ", ".join(ort.get_available_providers()))
EOF

echo "== provider"
"$python" -c "
from qarep_onnx.runtime.providers import select_provider
print('  ' + select_provider('$provider').note)" || { echo "provider $provider is not usable here" >&2; exit 5; }

echo "== optimize --validate --provider $provider (3 input sets each)"
models="qarep_detector__torchscript yolonas_deep__torchscript yolonas_deep__dynamo net_repvgg_a0_small__torchscript net_mobileone_s0_small__torchscript net_fastvit_small__torchscript repvit_m1_like__torchscript"
status=0
for name in $models; do
  "$python" -m qarep_onnx -q optimize --validate --provider "$provider" --samples 3 --json "$out/$name.json" \
    "fixtures/models/$name.onnx" "$out/$name.folded.onnx" 2> "$out/$name.err" || status=1
done
"$python" - "$out" $models <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"  {'model':<38} {'provider':<9} {'verdict':<13} error / the model's own float noise, per output")
for name in sys.argv[2:]:
    report = out / f"{name}.json"
    if not report.exists():
        print(f"  {name:<38} {'-':<9} {'error':<13} {(out / f'{name}.err').read_text().strip()}")
        continue
    v = json.loads(report.read_text())["validation"]
    multiples = ", ".join("?" if o["noise_multiple"] is None else f"{o['noise_multiple']:.2f}x" for o in v["outputs"])
    print(f"  {name:<38} {v['provider']:<9} {v['status']:<13} {multiples}")
EOF

echo "== validation tests with QAREP_TEST_PROVIDER=$provider"
if "$python" -c "import pytest" 2>/dev/null; then
  "$python" -m pytest -q -p no:cacheprovider tests/test_validate.py 2>&1 | tail -n 3 || status=1
else
  echo "  pytest is not importable here: pass the wheels of pytest, pluggy, iniconfig, packaging and pygments"
  status=1
fi

echo "== latency on $provider: unfused / qarep-onnx / native, $runs interleaved runs"
"$python" benchmarks/latency_networks.py --provider "$provider" --runs "$runs" || status=1

echo "outputs in $out"
exit $status
