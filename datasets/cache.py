"""On-disk cache of decoded datasets under results/cache, keyed by content version and options."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch

from bench.core.paths import DATASET_CACHE
from meta_bench.datasets.base import ClassImages

CACHE_DIR = Path(os.environ.get("METABENCH_CACHE", DATASET_CACHE))


def cache_path(name: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return CACHE_DIR / f"{name}-{digest}.pt"


def cached_class_images(name: str, key: dict, build: Callable[[], ClassImages]) -> ClassImages:
    """Load ``name`` decoded under ``key`` (which must hold the content version), building it once."""
    path = cache_path(name, key)
    if path.exists():
        stored = torch.load(path, weights_only=True)
        if stored.get("key") == json.loads(json.dumps(key, sort_keys=True, default=str)):
            return ClassImages(stored["images"], stored["offsets"], stored["splits"], stored["names"], stored["groups"])
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"key": json.loads(json.dumps(key, sort_keys=True, default=str)), "images": data.images,
                "offsets": data.offsets, "splits": data.splits, "names": data.names, "groups": data.groups}, tmp)
    os.replace(tmp, path)  # atomic: an interrupted build never leaves a half-written cache
    return data
