"""Which classes go to meta-train, meta-validation and meta-test: read from split files, or drawn by ratio with a
seed; with a grouping level, whole groups (Omniglot's alphabets) go to one split. Shared by the `folder` and
`huggingface` datasets, whose options embed ``ClassSplitOptions``'s fields.

Split files, in the folder ``split_files`` names (relative to the dataset's root): ``train.txt``, ``val.txt``,
``test.txt`` with one class per line, or ``train.csv``, ``val.csv``, ``test.csv`` of ``filename,label`` rows as
Ravi & Larochelle's miniImageNet split (a CSV also says which files a class holds).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.seeding import Seed
from meta_bench.datasets.base import SPLITS, DataRequestError

SPLIT_BY = ("ratio", "files", "pattern")


@dataclass(frozen=True)
class ClassSplitOptions:
    split_by: str = "ratio"  # "ratio": drawn with split_seed; "files": the split files under split_files
    split_ratios: tuple[float, float, float] = (0.64, 0.16, 0.20)  # train, val, test (miniImageNet's 64/16/20)
    split_seed: Seed = 0
    split_files: str = ""  # the folder of the split files, relative to the root ("" = the root itself)
    grouped: bool = False  # classes are <group>/<class>: whole groups go to one split
    # "pattern": the sorted classes take these splits in turn, repeated (Chen et al. 2019's CUB split: train, val,
    # train, test: even classes to train, i % 4 == 1 to val, i % 4 == 3 to test)
    split_pattern: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.split_by not in SPLIT_BY:
            raise ValueError(f"split_by must be one of {', '.join(SPLIT_BY)}, got {self.split_by!r}")
        if self.split_by == "pattern" and not ({*self.split_pattern} == set(SPLITS)):
            raise ValueError(f"split_pattern must name each of {', '.join(SPLITS)} at least once and nothing else, "
                             f"got {list(self.split_pattern)}")
        ratios = tuple(self.split_ratios)
        if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6 or not all(ratios):
            raise ValueError(f"split_ratios must be three positive fractions (train, val, test) summing to 1, got "
                             f"{list(ratios)}")


@dataclass(frozen=True)
class SplitFiles:
    """What split files say: each split's classes, and for CSVs, each class's files (``None`` for .txt files)."""

    classes: dict[str, list[str]]
    files: dict[str, list[str]] | None  # class -> its files as the CSV names them
    paths: list[Path]  # the split files themselves (part of the content identity)


def read_split_files(folder: Path, dataset: str) -> SplitFiles:
    """The split files under ``folder``: three .txt or three .csv; refused naming what is missing or malformed."""
    for suffix in (".txt", ".csv"):
        paths = [folder / f"{split}{suffix}" for split in SPLITS]
        if all(p.is_file() for p in paths):
            break
    else:
        raise DataRequestError(f"{dataset}: split_by: files needs train.txt, val.txt, test.txt (one class per line) "
                               f"or train.csv, val.csv, test.csv (filename,label) in {folder}; found neither set")
    classes: dict[str, list[str]] = {}
    files: dict[str, list[str]] | None = {} if suffix == ".csv" else None
    for split, path in zip(SPLITS, paths):
        if files is None:
            classes[split] = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            continue
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if not rows or [h.strip() for h in rows[0]] != ["filename", "label"]:
            raise DataRequestError(f"{dataset}: {path} must start with the header 'filename,label'")
        for number, row in enumerate(rows[1:], start=2):
            if len(row) != 2:
                raise DataRequestError(f"{dataset}: {path} line {number}: expected filename,label, got {row}")
            files.setdefault(row[1], []).append(row[0])
        classes[split] = list(dict.fromkeys(label for _, label in rows[1:]))
    seen: dict[str, str] = {}
    for split in SPLITS:
        if not classes[split]:
            raise DataRequestError(f"{dataset}: {folder / (split + suffix)} names no class")
        for name in classes[split]:
            if name in seen:
                raise DataRequestError(f"{dataset}: class {name!r} is in both the {seen[name]} and {split} split "
                                       f"files: the splits must be disjoint")
            seen[name] = split
    return SplitFiles(classes, files, paths)


def drawn(classes: list[str], groups: list[str], options: ClassSplitOptions, dataset: str) -> dict[str, list[str]]:
    """Each split's classes where no split files name them: by ratio, or by ``split_pattern``."""
    if options.split_by == "pattern":
        units = sorted(set(groups)) if options.grouped else sorted(classes)
        split_of = {unit: options.split_pattern[i % len(options.split_pattern)] for i, unit in enumerate(units)}
        unit_of = dict(zip(classes, groups)) if options.grouped else {c: c for c in classes}
        return {split: sorted(c for c in classes if split_of[unit_of[c]] == split) for split in SPLITS}
    return by_ratio(classes, groups, options, dataset)


def by_ratio(classes: list[str], groups: list[str], options: ClassSplitOptions, dataset: str) -> dict[str, list[str]]:
    """Each split's classes, drawn by ``split_ratios`` with ``split_seed``; with ``grouped``, whole groups are drawn
    (the ratios then apply to groups). Every split gets at least one class, or the request is refused."""
    units = sorted(set(groups)) if options.grouped else sorted(classes)
    order = np.random.default_rng(options.split_seed).permutation(len(units))
    train = int(round(options.split_ratios[0] * len(units)))
    val = int(round(options.split_ratios[1] * len(units)))
    counts = (train, val, len(units) - train - val)
    if min(counts) < 1:
        what = "groups" if options.grouped else "classes"
        raise DataRequestError(f"{dataset}: split_ratios {list(options.split_ratios)} of its {len(units)} {what} give "
                               f"{counts[0]} train, {counts[1]} val and {counts[2]} test {what}: every split needs at "
                               f"least one; add {what} or change split_ratios")
    chosen = {split: {units[i] for i in order[sum(counts[:s]):sum(counts[:s + 1])]}
              for s, split in enumerate(SPLITS)}
    unit_of = dict(zip(classes, groups)) if options.grouped else {c: c for c in classes}
    return {split: sorted(c for c in classes if unit_of[c] in chosen[split]) for split in SPLITS}
