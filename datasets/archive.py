"""A published archive installed whole or not at all: downloaded, checked against its published MD5 and extracted
with torchvision's utilities, in a scratch folder beside the target so that a failure leaves nothing behind."""
from __future__ import annotations

import http.client
import os
import tempfile
import urllib.error
import zipfile
import zlib
from pathlib import Path

from meta_bench.datasets.base import DataRequestError

# what a damaged zip raises while it is read: a bad header or CRC, corrupt deflate data, a stream cut short
DAMAGED_ARCHIVE = (zipfile.BadZipFile, zlib.error, EOFError)


def install_archive(url: str, md5: str, archive: Path, folder: Path) -> None:
    """Put the archive at ``url`` at ``archive`` and its top folder, extracted, at ``folder`` (both in the same parent
    folder). An archive already at ``archive`` with the published ``md5`` is not downloaded again. The archive is
    kept so that its checksum can be verified later."""
    from torchvision.datasets.utils import check_integrity, extract_archive  # noqa: PLC0415  (a second to import)

    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    by_hand = (f"retry, or download {url} by hand, check that its MD5 is {md5}, put it in {parent} and unzip it "
               f"there (it must give {folder})")
    # the same file system as the target: os.replace moves a finished folder in one step
    with tempfile.TemporaryDirectory(dir=parent, prefix=f".{archive.name}.") as scratch:
        kept = check_integrity(str(archive), md5)
        fetched = archive if kept else _download(url, md5, Path(scratch) / archive.name,
                                                 f"nothing was kept under {parent}: {by_hand}")
        try:
            extract_archive(str(fetched), os.path.join(scratch, "extracted"))
        except DAMAGED_ARCHIVE as error:
            raise DataRequestError(
                f"{archive.name} from {url} has the published MD5 {md5} but cannot be extracted ({error}): the "
                f"published archive itself is damaged; nothing was extracted under {parent}: "
                + (f"delete {archive}, then {by_hand}" if kept else by_hand)) from error
        extracted = Path(scratch) / "extracted" / folder.name
        if not extracted.is_dir():
            raise DataRequestError(f"{archive.name} from {url} holds no top folder {folder.name}/; nothing was "
                                   f"extracted under {parent}: {by_hand}")
        if not kept:
            os.replace(fetched, archive)  # first: an interruption now leaves a verified archive to extract next time
        os.replace(extracted, folder)


def _download(url: str, md5: str, path: Path, what_to_do: str) -> Path:
    from torchvision.datasets.utils import calculate_md5, download_url  # noqa: PLC0415

    try:
        download_url(url, str(path.parent), path.name)  # no md5 here: checked below, to say what was found
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise DataRequestError(f"the download of {path.name} from {url} failed ({error}); {what_to_do}") from error
    found = calculate_md5(str(path))
    if found != md5:
        raise DataRequestError(
            f"the download of {path.name} from {url} has MD5 {found} ({path.stat().st_size} bytes), expected {md5}: "
            f"the transfer was cut short, the file is damaged or the mirror changed; {what_to_do}")
    return path
