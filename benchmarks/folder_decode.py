"""How fast the `folder` dataset loads a generated tree: the first load (hashing every file for the content
identity, decoding and resizing on every core, writing the uint8 cache) and a second load from the cache, in images
per second, in one process; each load in a fresh registry, so nothing is held in memory between them.

    .venv/bin/python -m benchmarks.folder_decode [--classes 100] [--images 60] [--size 84] [--format jpg]

The tree: ``classes`` folders of ``images`` random colour pictures of ``size`` x ``size`` (JPEG by default, as
miniImageNet's files), loaded at image_size ``size`` (no resize) and at 64 (a resize of every image).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from meta_bench.datasets import cache, load_dataset, registry


def _tree(root: Path, classes: int, images: int, size: int, suffix: str) -> int:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c:03d}"
        folder.mkdir(parents=True)
        for i in range(images):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.{suffix}")
    return classes * images


def _timed_load(options: dict) -> float:
    registry._LOADED.clear()  # noqa: SLF001  (a fresh process's registry: nothing held from the previous load)
    started = time.perf_counter()
    load_dataset("folder", options)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--format", default="jpg", choices=("jpg", "png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        cache.CACHE_DIR = folder / "cache"
        count = _tree(folder / "data", args.classes, args.images, args.size, args.format)
        print(f"{count} {args.size}x{args.size} colour {args.format.upper()} images in {args.classes} class folders; "
              f"{os.cpu_count()} cores")
        for image_size in (args.size, 64):
            options = {"root": str(folder / "data"), "image_size": image_size, "channels": 3}
            first, cached = _timed_load(options), _timed_load(options)
            hashed = "hash" if image_size == args.size else "hashes from the manifest"
            print(f"image_size {image_size}: first load {first:.2f} s ({count / first:,.0f} images/s: {hashed}, decode"
                  f"{', resize' if image_size != args.size else ''}, cache); cached load {cached:.2f} s "
                  f"({count / cached:,.0f} images/s)")


if __name__ == "__main__":
    main()
