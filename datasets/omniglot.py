"""`omniglot`: the real Omniglot in torchvision's on-disk layout, under the protocol of Vinyals et al. / Finn et al.

28x28 images (strokes inverted to white on black, as in the MAML reference code), characters of both the
background and evaluation sets pooled and shuffled with a fixed seed, 1,200 for meta-training (1,100 train +
100 val) and the rest (423) for meta-test, each character rotated by 0/90/180/270 degrees into four classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.core.seeding import Seed
from meta_bench.datasets.archive import install_archive
from meta_bench.datasets.base import ClassImages, DataMissingError, DataRequestError, ImageDataset
from meta_bench.datasets.cache import cached_class_images
from meta_bench.datasets.content import of_files as content_of
from meta_bench.datasets.registry import register_dataset

VERSION = 1
SETS = ("images_background", "images_evaluation")
# torchvision is imported where Omniglot is used, not with this module: importing it costs about a second (it loads
# torch._dynamo through its models), which every `bench` process would pay for a dataset most never load
LAYOUT = ("<root>/omniglot-py/images_background/ and images_evaluation/, each <alphabet>/<character>/*.png "
          "(torchvision's layout), with images_background.zip and images_evaluation.zip beside them to verify against "
          "the published MD5s (download: true fetches and keeps them)")


@dataclass(frozen=True)
class OmniglotOptions:
    root: str = "results/data/omniglot"
    download: bool = False
    image_size: int = 28
    train_characters: int = 1100
    val_characters: int = 100
    rotations: bool = True
    split_seed: Seed = 1


def _archive(base: Path, name: str) -> tuple[str, str, Path]:
    """The published URL and MD5 of set ``name`` (torchvision's, one place to change them) and where it is kept."""
    from torchvision.datasets import Omniglot  # noqa: PLC0415

    return f"{Omniglot.download_url_prefix}/{name}.zip", Omniglot.zips_md5[name], base / f"{name}.zip"


def _character_dirs(root: Path, download: bool) -> list[Path]:
    from torchvision.datasets import Omniglot  # noqa: PLC0415
    from torchvision.datasets.utils import list_dir  # noqa: PLC0415

    base = root / Omniglot.folder
    if download:
        for name in SETS:
            if not (base / name).is_dir():
                install_archive(*_archive(base, name), base / name)
    missing = [s for s in SETS if not (base / s).is_dir()]
    if missing:
        raise DataMissingError(
            f"omniglot: {', '.join(str(base / s) for s in missing)} not found. Put the unzipped "
            f"images_background/ and images_evaluation/ folders of Omniglot under {base} (torchvision's layout: "
            f"<set>/<alphabet>/<character>/*.png), or set dataset.options.download: true where a network is available")
    return [base / s / a / c for s in SETS for a in list_dir(str(base / s)) for c in list_dir(str(base / s / a))]


def _decode(characters: list[Path], o: OmniglotOptions) -> ClassImages:
    from torchvision.datasets.utils import list_files  # noqa: PLC0415

    order = np.random.default_rng(o.split_seed).permutation(len(characters))
    n_train, n_val = o.train_characters, o.val_characters
    if n_train + n_val >= len(characters):
        raise DataRequestError(f"omniglot: train_characters + val_characters = {n_train + n_val} leaves no test "
                               f"characters out of the {len(characters)} found")
    angles = (0, 90, 180, 270) if o.rotations else (0,)
    images, offsets, names, groups, split_of = [], [0], [], [], []
    for rank, c in enumerate(order):
        folder = characters[c]
        split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        pictures = [Image.open(folder / f).convert("L").resize((o.image_size, o.image_size), Image.Resampling.LANCZOS)
                    for f in list_files(str(folder), ".png")]
        if not pictures:
            raise DataRequestError(f"omniglot: character folder {folder} holds no .png images")
        for angle in angles:
            for picture in pictures:
                images.append(255 - np.asarray(picture.rotate(angle), dtype=np.uint8))
            offsets.append(offsets[-1] + len(pictures))
            names.append(f"{folder.parent.name}/{folder.name}/rot{angle}")
            groups.append(folder.parent.name)
            split_of.append(split)
    splits = {s: torch.tensor([i for i, t in enumerate(split_of) if t == s], dtype=torch.int64)
              for s in ("train", "val", "test")}
    return ClassImages(torch.from_numpy(np.stack(images)[:, None]), torch.tensor(offsets), splits, names, groups)


def verify(o: OmniglotOptions) -> list[str]:
    """The problems found checking the archives under the root against the published MD5s (empty: verified)."""
    from torchvision.datasets import Omniglot  # noqa: PLC0415
    from torchvision.datasets.utils import calculate_md5  # noqa: PLC0415

    base = Path(o.root).expanduser().resolve() / Omniglot.folder
    problems = []
    for name in SETS:
        _, md5, archive = _archive(base, name)
        if archive.is_file():
            found = calculate_md5(str(archive))
            if found != md5:
                problems.append(f"{archive} has MD5 {found}, expected the published {md5}: it is damaged or not the "
                                f"published file; delete it and {base / name}, then download again")
        elif (base / name).is_dir():
            problems.append(f"{archive} is gone (only the extracted {name}/ is there), so the published checksum "
                            f"cannot be checked: put the archive back beside it, or delete {base / name} and "
                            f"download again")
        else:
            problems.append(f"neither {archive} nor {base / name}/ is there: nothing to check")
    return problems


@register_dataset("omniglot", OmniglotOptions, backbone="conv4", version=VERSION, layout=LAYOUT, verify=verify)
def load_omniglot(o: OmniglotOptions) -> ImageDataset:
    from torchvision.datasets.utils import list_files  # noqa: PLC0415

    root = Path(o.root).expanduser().resolve()
    characters = _character_dirs(root, o.download)
    images = [folder / f for folder in characters for f in list_files(str(folder), ".png")]
    content = content_of("omniglot", root, images)  # every image it decodes, by path, size and content
    key = {"version": VERSION, "content": content, "options": o.__dict__}
    return ImageDataset("omniglot", cached_class_images("omniglot", key, lambda: _decode(characters, o)), content)
