"""`miniimagenet`: the split of Ravi & Larochelle (train/val/test.csv of filename,label and an images/ folder)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meta_bench.datasets.base import SPLITS, ClassImages, DataMissingError, DataRequestError, ImageDataset
from meta_bench.datasets.cache import cached_class_images
from meta_bench.datasets.content import of_files as content_of
from meta_bench.datasets.registry import register_dataset

VERSION = 1
LAYOUT = "<root>/train.csv, val.csv and test.csv (filename,label) and <root>/images/ holding every file they name"


@dataclass(frozen=True)
class MiniImageNetOptions:
    root: str = "results/data/miniimagenet"
    image_size: int = 84


def _read_split(root: Path, split: str) -> dict[str, list[str]]:
    path = root / f"{split}.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [h.strip() for h in rows[0]] != ["filename", "label"]:
        raise DataRequestError(f"miniimagenet: {path} must start with the header 'filename,label'")
    by_label: dict[str, list[str]] = {}
    for filename, label in rows[1:]:
        by_label.setdefault(label, []).append(filename)
    return by_label


def _decode(root: Path, o: MiniImageNetOptions) -> ClassImages:
    images, offsets, names, splits = [], [0], [], {}
    for split in SPLITS:
        first = len(names)
        for label, files in sorted(_read_split(root, split).items()):
            for filename in files:
                picture = Image.open(root / "images" / filename).convert("RGB")
                if picture.size != (o.image_size, o.image_size):
                    picture = picture.resize((o.image_size, o.image_size), Image.Resampling.BILINEAR)
                images.append(np.asarray(picture, dtype=np.uint8).transpose(2, 0, 1))
            offsets.append(offsets[-1] + len(files))
            names.append(label)
        splits[split] = torch.arange(first, len(names), dtype=torch.int64)
    return ClassImages(torch.from_numpy(np.stack(images)), torch.tensor(offsets), splits, names, list(names))


@register_dataset("miniimagenet", MiniImageNetOptions, backbone="conv4", conv_filters=32, version=VERSION,
                  layout=LAYOUT)  # no published checksums of these files: nothing to verify
def load_miniimagenet(o: MiniImageNetOptions) -> ImageDataset:
    root = Path(o.root).expanduser().resolve()
    missing = [name for name in ("train.csv", "val.csv", "test.csv", "images") if not (root / name).exists()]
    if missing:
        raise DataMissingError(
            f"miniimagenet: {', '.join(missing)} not found under {root}. Put Ravi & Larochelle's train.csv, val.csv, "
            f"test.csv (filename,label) and the images/ folder there, or set dataset.options.root to where they are")
    # the split files and every image they name, by path, size and content
    images = {root / "images" / name for split in SPLITS for names in _read_split(root, split).values()
              for name in names}
    missing = sorted(path.name for path in images if not path.is_file())
    if missing:
        raise DataRequestError(f"miniimagenet: {len(missing)} image(s) named in the split files are not in "
                               f"{root / 'images'}: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    content = content_of("miniimagenet", root, [root / f"{s}.csv" for s in SPLITS] + sorted(images))
    key = {"version": VERSION, "content": content, "options": o.__dict__}
    return ImageDataset("miniimagenet", cached_class_images("miniimagenet", key, lambda: _decode(root, o)), content)
