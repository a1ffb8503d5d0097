"""What a dataset's episodes are made from, as one identity: the content of the files it reads, or the parameters it
is generated from. It is recorded on every run, and is part of what a finished run is reused under and of the
evaluation fingerprint: replacing a dataset's files under the same root reruns the cells that read them and never
pairs runs across the change.

Files are hashed once: a manifest per root (relative path -> size, modification time, SHA-256) is kept under the
dataset cache, and a file is read again only when its size or modification time changed, so a second run of a
gigabyte dataset stats its files and reads none.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from meta_bench.datasets import cache

HASH_CHUNK = 1 << 20


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def generated(parameters: dict[str, Any]) -> str:
    """The identity of data generated from ``parameters`` alone (its generator is code: the code identity's)."""
    return f"generated-{_digest(parameters)}"


def of_options(dataset: str, options: Any) -> str:
    """A plugin dataset whose loader names no content: its options alone (its files, if any, are not covered)."""
    return f"options-{_digest({'dataset': dataset, 'options': options})}"


def _manifest_path(name: str, root: Path) -> Path:
    return cache.CACHE_DIR / "manifests" / f"{name}-{_digest(str(root))}.json"


def _read_manifest(path: Path) -> dict[str, list]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: every file is hashed again
        return {}
    return entries if isinstance(entries, dict) else {}


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def manifest(name: str, root: Path, files: Iterable[Path]) -> dict[str, tuple[int, str]]:
    """Relative path -> (size, SHA-256) of ``files`` under ``root``, reading only files whose size or modification
    time differ from the cached manifest's (which is then rewritten whole, atomically)."""
    path = _manifest_path(name, root)
    cached = _read_manifest(path)
    entries, changed = {}, False
    for file in files:
        relative = file.relative_to(root).as_posix()
        stat = file.stat()
        known = cached.get(relative)
        if not (isinstance(known, list) and len(known) == 3 and known[:2] == [stat.st_size, stat.st_mtime_ns]):
            known, changed = [stat.st_size, stat.st_mtime_ns, _sha256(file)], True
        entries[relative] = known
    if changed or set(cached) != set(entries):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            json.dump(entries, out, sort_keys=True)
        os.replace(temporary, path)
    return {relative: (size, sha) for relative, (size, _, sha) in entries.items()}


def of_files(name: str, root: Path, files: Iterable[Path]) -> str:
    """The identity of the content of ``files`` (paths under ``root``): their relative paths, sizes and hashes."""
    return f"files-{_digest(sorted(manifest(name, root, files).items()))}"


def of_train_and_test(train: str, test: str | None) -> str:
    """A cell's data identity: its training data's, and its test data's after a ``+`` where it is tested on other
    data (cross-domain), so a change of either reruns the cell and keeps its runs apart."""
    return train if test is None or test == train else f"{train}+{test}"


def of_hugging_face(source: str, revision: str, fingerprints: dict[str, str], split_files: Iterable[Path]) -> str:
    """The identity of a Hugging Face dataset: where it comes from (a Hub id and revision, or a save_to_disk folder),
    the fingerprint of each split pooled (Hugging Face's hash of the split's table, or of what built it), and the
    content of the split files read."""
    return "hf-" + _digest({"source": source, "revision": revision, "fingerprints": fingerprints,
                            "split_files": {path.name: _sha256(path) for path in split_files}})
