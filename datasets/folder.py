"""`folder`: any tree of class folders, ``<root>/<class>/<image files>`` (torchvision's ImageFolder layout), or with
``grouped: true`` ``<root>/<group>/<class>/<image files>`` (whole groups go to one split, as Omniglot's alphabets).
Any image format PIL reads, greyscale or colour, resized to ``image_size`` and converted to ``channels``. The class
split comes from split files or a seeded ratio (``meta_bench.datasets.class_split``). With ``normalise``, episodes
are standardised by per-channel statistics of the meta-train classes' images, recorded in the dataset's statistics.

Decoded images are cached (uint8, keyed by the content identity of every file read and the options), so a second
run decodes nothing; the first decode uses every core and shows its progress (``meta_bench.datasets.image_decoding``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from meta_bench.datasets.base import SPLITS, DataMissingError, DataRequestError, ImageDataset
from meta_bench.datasets.cache import cached_class_images
from meta_bench.datasets.class_split import ClassSplitOptions, drawn, read_split_files
from meta_bench.datasets.content import of_files as content_of
from meta_bench.datasets.image_decoding import check_image_format, decode_classes, normalisation
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
        check_image_format(self)


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
        folder = (root / o.split_files).resolve()
        if not folder.is_relative_to(root):  # their content joins the identity, which is relative to the root
            raise DataRequestError(f"folder: split_files {o.split_files!r} is outside root {root}: put the split "
                                   f"files inside root (split_files is relative to it)")
        split = read_split_files(folder, "folder")
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
    return drawn(names, groups, o, "folder"), {c: sorted(filter(_is_image, on_disk[c].iterdir())) for c in on_disk}, []


def _find(root: Path, label: str, name: str) -> Path:
    for candidate in (root / name, root / "images" / name, root / label / name):
        if candidate.is_file():
            return candidate
    raise DataRequestError(f"folder: {name} (class {label!r}) is named in the split files but is not at {root / name}, "
                           f"{root / 'images' / name} or {root / label / name}")


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
