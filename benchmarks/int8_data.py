"""Inputs for the INT8 benchmarks: rendered text images for PaddleOCR's PP-OCRv4 detector, and where it comes from.

The detector (``ch_PP-OCRv4_det_infer.onnx``, a paddle2onnx export of PP-LCNetV3 + DB head) ships
inside the ``rapidocr-onnxruntime`` wheel on the package index.  :func:`det_model` downloads that
wheel with pip (``pip download rapidocr-onnxruntime --no-deps``) into a cache folder outside the
repository and takes the model out of it (zipfile); nothing is installed and the package is never a
dependency.  ``--det-model PATH`` in the benchmarks uses a copy you already have.

Text images are drawn with numpy only (no font library): glyphs from a 5x7 dot-matrix alphabet,
scaled, blurred and set in lines of words on paper-like backgrounds of varying tone, contrast and
noise, some rotated by a few degrees; :func:`scanned_page` draws a dense page with a grey gradient,
speckle and a slight skew, like a scan.  The detector's own preprocessing follows: BGR channel
order, ``x / 255``, ``(x - 0.5) / 0.5``, CHW, batch of one.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

DET_MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
CACHE = Path.home() / ".cache" / "qarep-onnx-benchmarks"

# 5x7 dot-matrix glyphs (rows top to bottom, '#' = ink): enough letters and digits for word shapes.
GLYPHS = {
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "####.#...##...##...##...##...#####.",
    "E": "######....#....####.#....#....#####", "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "K": "#...##..#.#.#..##...#.#..#..#.#...#",
    "L": "#....#....#....#....#....#....#####", "M": "#...###.###.#.##...##...##...##...#",
    "N": "#...###..##.#.##..###...##...##...#", "O": ".###.#...##...##...##...##...#.###.",
    "P": "####.#...##...#####.#....#....#....", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".#####....#.....###.....#....#####.", "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.", "W": "#...##...##...##.#.##.#.###.###...#",
    "Y": "#...##...#.#.#...#....#....#....#..", "0": ".###.#...##..###.#.###..##...#.###.",
    "1": "..#...##....#....#....#....#...###.", "2": ".###.#...#....#...#...#...#...#####",
    "3": "#####...#...#.....#....##...#.###..", "5": "######....####.....#....##...#.###.",
    "7": "#####....#...#...#...#....#....#...", "8": ".###.#...##...#.###.#...##...#.###.",
}
ALPHABET = "".join(GLYPHS)


def det_model(cache: Path = CACHE) -> Path:
    """The PP-OCRv4 detector, taken out of the rapidocr-onnxruntime wheel (downloaded once into ``cache``)."""
    target = cache / "ch_PP-OCRv4_det_infer.onnx"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("rapidocr_onnxruntime-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "rapidocr-onnxruntime", "--no-deps", "-d", str(cache)],
                       check=True, capture_output=True)
        wheels = sorted(cache.glob("rapidocr_onnxruntime-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        target.write_bytes(wheel.read(DET_MEMBER))
    return target


def _glyph(ch: str, scale: int) -> np.ndarray:
    bits = np.array([c == "#" for c in GLYPHS[ch]], dtype=np.float32).reshape(7, 5)
    return np.kron(bits, np.ones((scale, scale), np.float32))


def _blur(a: np.ndarray, passes: int = 1) -> np.ndarray:
    for _ in range(passes):
        a = (np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1) + 4 * a) / 8
    return a


def _rotate(a: np.ndarray, degrees: float) -> np.ndarray:
    """Nearest-neighbour rotation about the centre (enough for a few degrees of skew)."""
    h, w = a.shape
    t = np.deg2rad(degrees)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h / 2, w / 2
    sy = np.cos(t) * (yy - cy) - np.sin(t) * (xx - cx) + cy
    sx = np.sin(t) * (yy - cy) + np.cos(t) * (xx - cx) + cx
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    out = np.zeros_like(a)
    out[inside] = a[sy[inside].astype(int), sx[inside].astype(int)]
    return out


def _ink(rng: np.random.Generator, h: int, w: int, scale_range: tuple[int, int], line_gap: float, fill: float) -> np.ndarray:
    """A map of ink (0..1): lines of random words."""
    ink = np.zeros((h, w), np.float32)
    y = int(rng.integers(4, 30))
    while y < h - 10:
        scale = int(rng.integers(*scale_range))
        gh, gw = 7 * scale, 5 * scale
        if y + gh >= h:
            break
        x = int(rng.integers(4, 60))
        while x < w - gw and rng.random() < fill:
            for _ in range(int(rng.integers(2, 9))):
                if x + gw >= w:
                    break
                ink[y:y + gh, x:x + gw] = np.maximum(ink[y:y + gh, x:x + gw], _glyph(ALPHABET[rng.integers(len(ALPHABET))], scale))
                x += gw + max(1, scale)
            x += int(gw * rng.uniform(1.0, 2.5))
        y += int(gh * rng.uniform(line_gap, line_gap + 1.5))
    return _blur(ink, 1)


def text_image(rng: np.random.Generator, h: int = 480, w: int = 640) -> np.ndarray:
    """One BGR uint8 image of text lines on a paper-like background."""
    ink = _ink(rng, h, w, (2, 7), 1.6, 0.8)
    if rng.random() < 0.5:
        ink = _rotate(ink, float(rng.uniform(-6, 6)))
    paper = rng.uniform(170, 250, 3).astype(np.float32)
    colour = rng.uniform(0, 90, 3).astype(np.float32)
    shade = np.linspace(0, rng.uniform(-30, 30), w, dtype=np.float32)[None, :, None]
    image = paper[None, None] + shade + rng.normal(0, rng.uniform(2, 10), (h, w, 1)).astype(np.float32)
    image = image * (1 - ink[..., None]) + colour[None, None] * ink[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def scanned_page(rng: np.random.Generator, h: int = 480, w: int = 640) -> np.ndarray:
    """A dense page of small text with a grey gradient, speckle and a slight skew, like a scan."""
    ink = _rotate(_ink(rng, h, w, (2, 3), 1.3, 0.97), float(rng.uniform(-2, 2)))
    gradient = np.linspace(225, 185, h, dtype=np.float32)[:, None] + np.linspace(0, 15, w, dtype=np.float32)[None, :]
    speckle = (rng.random((h, w)) < 0.003).astype(np.float32) * rng.uniform(60, 120)
    grey = gradient - speckle + rng.normal(0, 6, (h, w)).astype(np.float32)
    grey = grey * (1 - 0.85 * ink) + 25 * ink
    return np.clip(np.repeat(grey[..., None], 3, axis=2), 0, 255).astype(np.uint8)


def preprocess(bgr: np.ndarray) -> np.ndarray:
    """The detector's preprocessing: BGR, x / 255, (x - 0.5) / 0.5, CHW, batch of one (float32)."""
    x = bgr.astype(np.float32) / 255.0
    x = (x - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def text_sets(folder: Path, calibration: int = 16, holdout: int = 8, seed: int = 0, h: int = 480, w: int = 640,
              input_name: str = "x") -> tuple[list[Path], list[Path]]:
    """``.npz`` input files for the detector: ``calibration`` text images, and ``holdout`` others whose last is a scanned page."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(calibration + holdout):
        page = k == calibration + holdout - 1
        image = scanned_page(rng, h, w) if page else text_image(rng, h, w)
        path = folder / f"{'held' if k >= calibration else 'calib'}_{k:02d}.npz"
        np.savez(path, **{input_name: preprocess(image)})
        paths.append(path)
    return paths[:calibration], paths[calibration:]
