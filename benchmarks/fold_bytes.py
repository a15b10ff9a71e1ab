"""Fold every fixture (full and partial fusion) and print a SHA-256 of each output file.

A refactor of the folder must not move a single byte of its output.  Run it on the working tree
and on a commit before the change, side by side, and compare:

    python benchmarks/fold_bytes.py --against HEAD~5

``--against REF`` checks REF out into a temporary worktree, folds the same fixtures with that
tree's package, and lists every file whose bytes differ (exit 1 when any does).  ``--json PATH``
writes the digests.  Only the library calls ``optimize`` and ``save_model`` are used, so any two
versions of the package compare.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "fixtures" / "models"


def digests(package_root: Path, models: list[Path]) -> dict[str, str]:
    """Fold each model with the package found under ``package_root``; name -> sha256 of the bytes written."""
    sys.path.insert(0, str(package_root))
    import qarep_onnx

    assert Path(qarep_onnx.__file__).resolve().is_relative_to(package_root.resolve()), qarep_onnx.__file__
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "out.onnx"
        for path in models:
            for keep_post_bn in (False, True):
                key = f"{path.name}{' --keep-post-bn' if keep_post_bn else ''}"
                try:
                    result = qarep_onnx.optimize(str(path), keep_post_bn=keep_post_bn)
                    qarep_onnx.save_model(result.model, target)
                    out[key] = hashlib.sha256(target.read_bytes()).hexdigest()
                except Exception as exc:  # a refusal to load is part of the behaviour too
                    out[key] = f"error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REF", help="compare with the fold of the package at this git commit")
    parser.add_argument("--json", metavar="PATH", help="write the digests of this tree as JSON")
    parser.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)  # fold with the package under ROOT
    args = parser.parse_args()
    models = sorted(MODELS.glob("*.onnx"))
    if args.child:
        json.dump(digests(Path(args.child), models), sys.stdout)
        return 0
    mine = _in_child(ROOT, models)
    if args.json:
        Path(args.json).write_text(json.dumps(mine, indent=1, sort_keys=True) + "\n")
    print(f"{len(mine)} fold outputs from {len(models)} fixtures")
    if not args.against:
        return 0
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.against],
                       check=True, capture_output=True)
        try:
            theirs = _in_child(tree, models)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    for key in differ:
        print(f"differs: {key}: {theirs.get(key)} -> {mine.get(key)}")
    print(f"{len(differ)} of {len(mine)} outputs differ from {args.against}")
    return 1 if differ else 0


def _in_child(package_root: Path, models: list[Path]) -> dict[str, str]:
    """The digests computed in a fresh interpreter that imports the package under ``package_root``."""
    env = dict(os.environ, PYTHONPATH=str(package_root))
    done = subprocess.run([sys.executable, __file__, "--child", str(package_root)], env=env, check=True,
                          capture_output=True, text=True, cwd=package_root)
    return json.loads(done.stdout)


if __name__ == "__main__":
    sys.exit(main())
