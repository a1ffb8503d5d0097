"""Decoding the images of an image-classification dataset into :class:`ClassImages`, shared by the `folder` and
`huggingface` datasets: an image is a file, or held in memory (a Hugging Face row's encoded bytes); each is converted
to the options' ``channels`` and resized to ``image_size``, on every core. With ``normalise``, episodes are
standardised by the per-channel statistics of the meta-train classes' images (``normalisation``).
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from meta_bench.datasets.base import SPLITS, ClassImages, DataRequestError


class ImageFormat(Protocol):
    """What decoding reads from a dataset's options."""

    @property
    def image_size(self) -> int: ...  # every image is resized to image_size x image_size

    @property
    def channels(self) -> int: ...  # 1: greyscale, 3: colour


def check_image_format(o: ImageFormat) -> None:
    if o.channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (colour), got {o.channels}")
    if o.image_size <= 0:
        raise ValueError(f"image_size must be positive, got {o.image_size}")


@dataclass(frozen=True)
class HeldImage:
    """An image held in memory rather than in a file of its own (a Hugging Face row): its encoded bytes, decoded
    with the files on every core, and where it is, for the message that refuses it."""

    encoded: bytes
    where: str  # "row 12 of split 'train' of <the dataset>"


ImageSource = Path | HeldImage


def _decode_one(source: ImageSource, o: ImageFormat, what: str) -> np.ndarray:
    try:
        with Image.open(source if isinstance(source, Path) else io.BytesIO(source.encoded)) as picture:
            picture = picture.convert("L" if o.channels == 1 else "RGB")
            if picture.size != (o.image_size, o.image_size):
                picture = picture.resize((o.image_size, o.image_size), Image.Resampling.BILINEAR)
            pixels = np.asarray(picture, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        if isinstance(source, Path):
            raise DataRequestError(f"{what}: cannot read the image {source}: {error}. Remove or replace the file") \
                from None
        raise DataRequestError(f"{what}: cannot read the image in {source.where}: {error}. Fix or drop that row") \
            from None
    return pixels[None] if o.channels == 1 else pixels.transpose(2, 0, 1)


def decode_classes(order: list[tuple[str, str, list[ImageSource]]], o: ImageFormat, what: str) -> ClassImages:
    """``(split, class, images)`` in order, decoded on every core with a progress bar (on a terminal)."""
    sources = [source for _, _, images in order for source in images]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes and resizes without the GIL
        images = list(tqdm(pool.map(lambda s: _decode_one(s, o, what), sources), total=len(sources),
                           desc=f"{what}: decoding", unit="image", disable=None))
    offsets = np.cumsum([0] + [len(class_sources) for _, _, class_sources in order])
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
