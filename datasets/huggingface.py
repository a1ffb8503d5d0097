"""`huggingface`: an image-classification dataset of Hugging Face's `datasets` library, by Hub id (``name``, where the
Hub is reachable) or from a folder written by ``save_to_disk`` (``path``). The splits named by ``hf_splits`` (all by
default) are pooled into one set of classes, which is split into meta-train, meta-validation and meta-test classes as
the `folder` dataset's are (``meta_bench.datasets.class_split``; split files are read from ``split_files`` relative
to the current directory, as there is no root). A class is the label feature's name where it is a ``ClassLabel``,
else the label's text. Images are decoded, resized and optionally normalised as the `folder` dataset's
(``meta_bench.datasets.image_decoding``) and cached under the content identity: the source, its revision, each
pooled split's fingerprint and the split files.

The library is imported only when this dataset is loaded: ``pip install 'meta-bench[huggingface]'``.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from meta_bench.datasets.base import SPLITS, DataMissingError, DataRequestError, ImageDataset
from meta_bench.datasets.cache import cached_class_images
from meta_bench.datasets.class_split import ClassSplitOptions, drawn, read_split_files
from meta_bench.datasets.content import of_hugging_face
from meta_bench.datasets.image_decoding import (HeldImage, ImageSource, check_image_format, decode_classes,
                                                normalisation)
from meta_bench.datasets.registry import register_dataset

VERSION = 1
EXTRA = "pip install 'meta-bench[huggingface]'"
LAYOUT = ("a Hugging Face dataset with an Image() column and a label column (a ClassLabel or any value): name (a Hub "
          "id) or path (a folder written by save_to_disk); optional split files train/val/test.txt (one class per "
          "line) under split_files")
Rows = dict[str, list[tuple[str, int]]]  # class -> its (split, row index) in the pooled splits' order


@dataclass(frozen=True)
class HuggingFaceOptions(ClassSplitOptions):
    name: str = ""  # a Hub id (the Hub must be reachable); exactly one of name and path
    path: str = ""  # a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk
    revision: str = ""  # of the Hub dataset: a branch, tag or commit ("" = its default branch)
    image_column: str = "image"  # an Image() feature
    label_column: str = "label"
    hf_splits: tuple[str, ...] = ()  # the dataset's splits pooled into the classes (empty: all of them)
    image_size: int = 84
    channels: int = 3  # 1: greyscale, 3: colour (every image converted)
    normalise: bool = False  # standardise by the meta-train classes' per-channel mean and standard deviation

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.name) == bool(self.path):
            raise ValueError(f"give exactly one of name (a Hugging Face Hub id) and path (a folder written by "
                             f"save_to_disk), got {'both' if self.name else 'neither'}")
        if self.revision and not self.name:
            raise ValueError("revision selects a version of a Hub dataset (name); a save_to_disk folder (path) has "
                             "none")
        if self.grouped:
            raise ValueError("grouped: true needs a group level above the classes, which a Hugging Face label does "
                             "not have")
        check_image_format(self)


def hugging_face_datasets() -> ModuleType:
    """Hugging Face's `datasets` module, refused naming the extra that installs it where it is absent."""
    ours = Path(__file__).resolve().parent
    loaded = sys.modules.get("datasets")
    if loaded is not None and Path(getattr(loaded, "__file__", None) or "").resolve().parent != ours:
        return loaded
    # In a checkout, the folder datasets/ (this package, installed as meta_bench.datasets) sits on sys.path under the
    # library's name wherever Python starts in the repository's root (python -m bench, pytest): look past it.
    search = [entry for entry in sys.path if (Path(entry or os.curdir) / "datasets").resolve() != ours]
    spec = importlib.machinery.PathFinder.find_spec("datasets", search)
    if spec is None or spec.loader is None:
        raise DataRequestError(f"huggingface: Hugging Face's datasets library is not installed: {EXTRA}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["datasets"] = module  # as `import` does: the library's own imports of datasets.* resolve to it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["datasets"]
        raise
    return module


def _source(o: HuggingFaceOptions) -> str:
    """The Hub id, or the save_to_disk folder as an absolute path."""
    return o.name or str(Path(o.path).expanduser().resolve())


def _load_splits(hf: ModuleType, o: HuggingFaceOptions) -> dict[str, Any]:
    """Every split of the dataset by name (a lone saved Dataset is split ``train``, as Hugging Face names one)."""
    if o.name:
        try:
            loaded = hf.load_dataset(o.name, revision=o.revision or None)
        except ConnectionError as error:
            raise DataMissingError(f"huggingface: {error}; where the Hub is unreachable, save the dataset with "
                                   f"save_to_disk on a machine that reaches it and give its folder as path") from None
    else:
        folder = Path(o.path).expanduser().resolve()
        if not folder.is_dir():
            raise DataMissingError(f"huggingface: {folder} is not a folder; set path to one written by save_to_disk")
        try:
            loaded = hf.load_from_disk(str(folder))
        except FileNotFoundError as error:  # a folder that save_to_disk did not write
            raise DataMissingError(f"huggingface: {error}") from None
    if isinstance(loaded, hf.DatasetDict):
        return dict(loaded)
    return {str(loaded.split) if loaded.split else "train": loaded}


def _pooled(hf: ModuleType, splits: dict[str, Any], o: HuggingFaceOptions) -> dict[str, Any]:
    """The splits ``hf_splits`` names (all where it names none), each holding both columns, images as Image()."""
    unknown = [s for s in o.hf_splits if s not in splits]
    if unknown:
        raise DataRequestError(f"huggingface: {_source(o)} has no split {', '.join(map(repr, unknown))}; its splits: "
                               f"{', '.join(splits)}")
    chosen = {s: splits[s] for s in o.hf_splits or splits}
    for split, table in chosen.items():
        for option, column in (("image_column", o.image_column), ("label_column", o.label_column)):
            if column not in table.column_names:
                raise DataRequestError(f"huggingface: split {split!r} of {_source(o)} has no column {column!r} "
                                       f"({option}); its columns: {', '.join(table.column_names)}")
        if not isinstance(table.features[o.image_column], hf.Image):
            raise DataRequestError(f"huggingface: column {o.image_column!r} of split {split!r} of {_source(o)} is "
                                   f"{table.features[o.image_column]}, not an Image() feature; set image_column")
    return chosen


def _rows_by_class(hf: ModuleType, splits: dict[str, Any], o: HuggingFaceOptions) -> Rows:
    rows: Rows = {}
    for split, table in splits.items():
        feature = table.features[o.label_column]
        names = feature.names if isinstance(feature, hf.ClassLabel) else None
        labels = list(table[o.label_column])
        # Hugging Face marks an unlabelled row (a competition's test split) by -1 in a ClassLabel, or by None
        unlabelled = sum(label is None or (names is not None and label < 0) for label in labels)
        if unlabelled:
            raise DataRequestError(f"huggingface: split {split!r} of {_source(o)} has {unlabelled} unlabelled row(s) "
                                   f"in {o.label_column!r}; leave it out with hf_splits (its splits: "
                                   f"{', '.join(splits)})")
        for index, label in enumerate(labels):
            rows.setdefault(names[label] if names is not None else str(label), []).append((split, index))
    return rows


def _class_split(classes: list[str], o: HuggingFaceOptions) -> tuple[dict[str, list[str]], list[Path]]:
    """Each split's classes, and the split files read."""
    if o.split_by != "files":
        return drawn(classes, classes, o, "huggingface"), []
    folder = Path(o.split_files).expanduser().resolve()
    split = read_split_files(folder, "huggingface")
    if split.files is not None:
        raise DataRequestError(f"huggingface: the split files in {folder} are CSVs of filename,label, which name "
                               f"image files; a Hugging Face dataset has rows, not files: give train.txt, val.txt and "
                               f"test.txt, one class per line")
    unknown = [c for names in split.classes.values() for c in names if c not in classes]
    if unknown:
        raise DataRequestError(f"huggingface: the split files name {len(unknown)} class(es) that are no label of "
                               f"{_source(o)}: {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}")
    return split.classes, split.paths


def _images(hf: ModuleType, splits: dict[str, Any], o: HuggingFaceOptions) -> dict[tuple[str, int], ImageSource]:
    """Each row's image, still encoded, so that it is decoded with the others on every core; a file where the row
    holds only its path (a dataset built from local files and not embedded: its fingerprint covers the path alone)."""
    images = {}
    for split, table in splits.items():
        encoded = table.cast_column(o.image_column, hf.Image(decode=False))[o.image_column]
        for index, value in enumerate(encoded):
            where = f"row {index} of split {split!r} of {_source(o)}"
            if value["bytes"] is not None:
                images[split, index] = HeldImage(value["bytes"], where)
            elif value["path"] is not None:
                images[split, index] = Path(value["path"])
            else:
                raise DataRequestError(f"huggingface: {where} has no image in {o.image_column!r}")
    return images


@register_dataset("huggingface", HuggingFaceOptions, backbone="conv4", conv_filters=32, version=VERSION,
                  layout=LAYOUT)
def load_huggingface(o: HuggingFaceOptions) -> ImageDataset:
    hf = hugging_face_datasets()
    splits = _pooled(hf, _load_splits(hf, o), o)
    rows = _rows_by_class(hf, splits, o)
    assignment, split_files = _class_split(sorted(rows), o)
    content = of_hugging_face(_source(o), o.revision, {s: t._fingerprint for s, t in splits.items()}, split_files)
    key = {"version": VERSION, "content": content, "options": {k: v for k, v in o.__dict__.items() if k != "normalise"}}

    def decode():
        images = _images(hf, splits, o)
        order = [(split, name, [images[row] for row in rows[name]]) for split in SPLITS for name in assignment[split]]
        return decode_classes(order, o, "huggingface")

    data = cached_class_images("huggingface", key, decode)
    return ImageDataset("huggingface", data, content, normalisation(data) if o.normalise else None)
