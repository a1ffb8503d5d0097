"""`folder`: any tree of class folders, ``<root>/<class>/<image files>`` (torchvision's ImageFolder layout), or with
``grouped: true`` ``<root>/<group>/<class>/<image files>`` (whole groups go to one split, as Omniglot's alphabets).
Any image format PIL reads, greyscale or colour, resized to ``image_size`` and converted to ``channels``. The class
split comes from split files or a seeded ratio (``meta_bench.datasets.class_split``). With ``normalise``, episodes
are standardised by per-channel statistics of the meta-train classes' images, recorded in the dataset's statistics.

Decoded images are cached (uint8, keyed by the content identity of every file read and the options), so a second
run decodes nothing; the first decode uses every core and shows its progress.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from meta_bench.datasets.base import SPLITS, ClassImages, DataMissingError, DataRequestError, ImageDataset
from meta_bench.datasets.cache import cached_class_images
from meta_bench.datasets.class_split import ClassSplitOptions, by_ratio, read_split_files
from meta_bench.datasets.content import of_files as content_of
from meta_bench.datasets.registry import register_dataset

VERSION = 1
LAYOUT = ("<root>/<class>/<image files> (with grouped: true, <root>/<group>/<class>/<image files>); optional split "
          "files train/val/test .txt (one class per line) or .csv (filename,label)")


@dataclass(frozen=True)
class FolderOptions(ClassSplitOptions):
    root: str = ""  # the folder of class folders (required)
    image_size: int = 84
    channels: int = 3  # 1: greyscale, 3: colour (every image converted)
    normalise: bool = False  # standardise by the meta-train classes' per-channel mean and standard deviation

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.root:
            raise ValueError("root is required: the folder of class folders, " + LAYOUT)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (greyscale) or 3 (colour), got {self.channels}")
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in Image.registered_extensions()


def _class_folders(root: Path, grouped: bool) -> dict[str, Path]:
    """Class name -> its folder: ``class``, or ``group/class`` with ``grouped``."""
    def folders(parent: Path) -> list[Path]:
        return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))

    if grouped:
        return {f"{g.name}/{c.name}": c for g in folders(root) for c in folders(g)}
    return {c.name: c for c in folders(root)}


def _classes(root: Path, o: FolderOptions) -> tuple[dict[str, list[str]], dict[str, list[Path]], list[Path]]:
    """Each split's classes, each class's image files, and the split files read."""
    if o.split_by == "files":
        split = read_split_files(root / o.split_files, "folder")
        if split.files is not None:  # CSV rows name the files: <root>/<file>, <root>/images/<file>, <root>/<label>/<file>
            files = {label: [_find(root, label, name) for name in names] for label, names in split.files.items()}
            return split.classes, files, split.paths
        on_disk = _class_folders(root, o.grouped)
        unknown = [c for names in split.classes.values() for c in names if c not in on_disk]
        if unknown:
            raise DataRequestError(f"folder: the split files name {len(unknown)} class(es) with no folder under "
                                   f"{root}: {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}")
        return split.classes, {c: sorted(filter(_is_image, on_disk[c].iterdir())) for c in on_disk}, split.paths
    on_disk = _class_folders(root, o.grouped)
    if not on_disk:
        raise DataMissingError(f"folder: no class folders under {root}; expected {LAYOUT}")
    names = list(on_disk)
    groups = [name.split("/")[0] for name in names]
    return by_ratio(names, groups, o, "folder"), {c: sorted(filter(_is_image, on_disk[c].iterdir())) for c in on_disk}, []


def _find(root: Path, label: str, name: str) -> Path:
    for candidate in (root / name, root / "images" / name, root / label / name):
        if candidate.is_file():
            return candidate
    raise DataRequestError(f"folder: {name} (class {label!r}) is named in the split files but is not at {root / name}, "
                           f"{root / 'images' / name} or {root / label / name}")


def _decode_one(path: Path, o: FolderOptions) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            picture = picture.convert("L" if o.channels == 1 else "RGB")
            if picture.size != (o.image_size, o.image_size):
                picture = picture.resize((o.image_size, o.image_size), Image.Resampling.BILINEAR)
            pixels = np.asarray(picture, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataRequestError(f"folder: cannot read the image {path}: {error}. Remove or replace the file") from None
    return pixels[None] if o.channels == 1 else pixels.transpose(2, 0, 1)


def decode_classes(order: list[tuple[str, str, list[Path]]], o: FolderOptions, what: str) -> ClassImages:
    """``(split, class, files)`` in order, decoded on every core with a progress bar (on a terminal)."""
    paths = [path for _, _, files in order for path in files]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes and resizes without the GIL
        images = list(tqdm(pool.map(lambda p: _decode_one(p, o), paths), total=len(paths),
                           desc=f"{what}: decoding", unit="image", disable=None))
    offsets = np.cumsum([0] + [len(files) for _, _, files in order])
    names = [name for _, name, _ in order]
    splits = {s: torch.tensor([i for i, (split, _, _) in enumerate(order) if split == s], dtype=torch.int64)
              for s in SPLITS}
    pixels = torch.from_numpy(np.stack(images)) if images else torch.zeros((0, o.channels, o.image_size, o.image_size),
                                                                           dtype=torch.uint8)
    return ClassImages(pixels, torch.from_numpy(offsets), splits, names, [n.split("/")[0] for n in names])


def normalisation(data: ClassImages) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (of pixels in [0, 1]) over the meta-train classes' images."""
    rows = torch.cat([torch.arange(int(data.offsets[c]), int(data.offsets[c + 1])) for c in data.splits["train"]])
    pixels = data.images[rows].double().div_(255.0)
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


@register_dataset("folder", FolderOptions, backbone="conv4", conv_filters=32, version=VERSION, layout=LAYOUT)
def load_folder(o: FolderOptions) -> ImageDataset:
    root = Path(o.root).expanduser().resolve()
    if not root.is_dir():
        raise DataMissingError(f"folder: {root} is not a folder; set dataset.options.root to one laid out as {LAYOUT}")
    splits, files, split_files = _classes(root, o)
    order = [(split, name, files[name]) for split in SPLITS for name in splits[split]]
    content = content_of("folder", root, split_files + [path for _, _, paths in order for path in paths])
    key = {"version": VERSION, "content": content, "options": {k: v for k, v in o.__dict__.items() if k != "normalise"}}
    data = cached_class_images("folder", key, lambda: decode_classes(order, o, "folder"))
    return ImageDataset("folder", data, content, normalisation(data) if o.normalise else None)
