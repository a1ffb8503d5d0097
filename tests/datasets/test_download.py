"""Omniglot's `download: true` against a local mirror serving archives in the published format: a good download is
checked, extracted and loaded; a damaged one ends in a clear error and leaves nothing under the root."""
import hashlib
import http.server
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
from torchvision.datasets import Omniglot

from meta_bench.datasets import DATASETS, SPLITS, DataRequestError, load_dataset
from meta_bench.datasets.registry import parse_options

ARCHIVES = ("images_background.zip", "images_evaluation.zip")


def md5_of(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()



@pytest.fixture(scope="module")
def archives(omniglot_root, tmp_path_factory) -> dict[str, bytes]:
    """The miniature tree zipped as Omniglot publishes it: images_background.zip holds
    images_background/<alphabet>/<character>/<nnnn_nn>.png, and so for images_evaluation."""
    out = tmp_path_factory.mktemp("archives")
    return {name: Path(shutil.make_archive(str(out / Path(name).stem), "zip", omniglot_root / "omniglot-py",
                                           Path(name).stem)).read_bytes() for name in ARCHIVES}


class Mirror:
    """What the local server answers for a file name: a body and the Content-Length it declares."""

    def __init__(self, monkeypatch):
        self.files: dict[str, tuple[bytes, int]] = {}
        self._monkeypatch = monkeypatch

    def publish(self, name: str, body: bytes, md5: str | None = None, declared: int | None = None) -> None:
        """Serve ``body`` as ``name``, and make ``md5`` (by default the body's) the checksum torchvision publishes."""
        self.files[name] = (body, len(body) if declared is None else declared)
        self._monkeypatch.setitem(Omniglot.zips_md5, Path(name).stem, md5 or md5_of(body))


@pytest.fixture()
def mirror(monkeypatch):
    """An HTTP server on a free local port that torchvision's Omniglot URL and checksums point to, for one test."""
    served = Mirror(monkeypatch)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            name = self.path.rsplit("/", 1)[-1]
            if name not in served.files:
                self.send_error(404)
                return
            body, declared = served.files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            try:
                self.wfile.write(body)  # then the connection closes (HTTP/1.0): a short body ends there
            except (BrokenPipeError, ConnectionResetError):
                pass  # torchvision's redirect probe (a GET) reads the headers only and hangs up

        def log_message(self, *args):  # no request log in the test output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # a stalled transfer fails the test rather than hanging it
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # urllib would send the request to a configured proxy
    monkeypatch.setattr(Omniglot, "download_url_prefix", f"http://127.0.0.1:{server.server_port}/python")
    monkeypatch.setattr(Omniglot, "zips_md5", dict(Omniglot.zips_md5))  # publish() edits this copy only
    try:
        yield served
    finally:
        socket.setdefaulttimeout(previous_timeout)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def options(root: Path, download: bool = True) -> dict:
    return {"root": str(root), "download": download, "train_characters": 6, "val_characters": 2}


def verify(root: Path) -> list[str]:
    return DATASETS["omniglot"].verify(parse_options("omniglot", options(root, download=False)))


def test_download_fetches_checks_extracts_and_loads_and_keeps_the_archives(mirror, archives, tmp_path,
                                                                            isolated_cache):
    for name, body in archives.items():
        mirror.publish(name, body)
    root = tmp_path / "omniglot"
    data = load_dataset("omniglot", options(root))
    # 12 characters: 6 train, 2 val, 4 test, each rotated into 4 classes of 20 drawings
    assert [data.num_classes(s) for s in SPLITS] == [24, 8, 16]
    assert data.min_examples("train") == 20
    # the archives are kept beside the folders (to be verified), and no scratch folder is left
    assert sorted(p.name for p in (root / "omniglot-py").iterdir()) == [
        "images_background", "images_background.zip", "images_evaluation", "images_evaluation.zip"]
    assert verify(root) == []


def _cut_short(archives: dict[str, bytes]) -> tuple[bytes, str, int]:
    body = archives["images_background.zip"]
    return body[:len(body) // 2], md5_of(body), len(body)  # the full Content-Length, half the bytes


def _other_checksum(archives: dict[str, bytes]) -> tuple[bytes, str, int]:
    body = archives["images_background.zip"]
    return body, "0" * 32, len(body)  # the mirror's file changed, or the published checksum did


def _truncated_archive(archives: dict[str, bytes]) -> tuple[bytes, str, int]:
    body = archives["images_background.zip"]
    short = body[:len(body) // 2]
    return short, md5_of(short), len(short)  # published so: passes the checksum, fails to open


def _damaged_mid_archive(archives: dict[str, bytes]) -> tuple[bytes, str, int]:
    body = archives["images_background.zip"]
    damaged = body[:len(body) // 2] + bytes(64) + body[len(body) // 2 + 64:]
    return damaged, md5_of(damaged), len(damaged)  # extraction fails after writing the members before the damage


def _other_top_folder(archives: dict[str, bytes]) -> tuple[bytes, str, int]:
    body = archives["images_evaluation.zip"]
    return body, md5_of(body), len(body)  # a whole archive, of the other set


@pytest.mark.parametrize("damage, message", [
    (_cut_short, r"has MD5 (?P<found>\w+) \(\d+ bytes\), expected (?P<published>\w+): the transfer was cut short"),
    (_other_checksum, r"has MD5 (?P<found>\w+) \(\d+ bytes\), expected (?P<published>\w+): .*mirror changed"),
    (_truncated_archive, r"has the published MD5 \w+ but cannot be extracted"),
    (_damaged_mid_archive, r"has the published MD5 \w+ but cannot be extracted"),
    (_other_top_folder, r"holds no top folder images_background/"),
], ids=["cut-short", "other-checksum", "truncated-archive", "damaged-mid-archive", "other-top-folder"])
def test_a_damaged_download_is_refused_clearly_and_leaves_nothing(mirror, archives, tmp_path, isolated_cache,
                                                                   damage, message):
    served, published, declared = damage(archives)
    mirror.publish("images_background.zip", served, published, declared)
    mirror.publish("images_evaluation.zip", archives["images_evaluation.zip"])
    root = tmp_path / "omniglot"
    with pytest.raises(DataRequestError) as refused:
        load_dataset("omniglot", options(root))
    said = str(refused.value)
    found = re.search(rf"images_background\.zip from http://127\.0\.0\.1:\d+/python/images_background\.zip "
                      rf"{message}", said)
    assert found, said
    if "found" in found.groupdict():  # the MD5 of what arrived, and the published one
        assert (found["found"], found["published"]) == (md5_of(served), published)
    assert re.search(r"nothing was (kept|extracted) under .*download .* by hand", said), said
    # no half-extracted folder, no damaged archive, no scratch folder: only the empty omniglot-py/
    assert sorted(root.rglob("*")) == [root / "omniglot-py"]


def test_a_file_missing_on_the_mirror_is_refused_clearly(mirror, tmp_path, isolated_cache):
    with pytest.raises(DataRequestError, match=r"the download of images_background\.zip from .* failed "
                                               r"\(HTTP Error 404.*nothing was kept"):
        load_dataset("omniglot", options(tmp_path / "omniglot"))
    assert sorted((tmp_path / "omniglot").rglob("*")) == [tmp_path / "omniglot" / "omniglot-py"]


def test_verify_checks_the_archives_against_the_published_checksums(archives, tmp_path, monkeypatch):
    base = tmp_path / "omniglot-py"
    assert [p.split(": ")[-1] for p in verify(tmp_path)] == ["nothing to check"] * 2
    base.mkdir()
    for name, body in archives.items():
        (base / name).write_bytes(body)
        monkeypatch.setitem(Omniglot.zips_md5, Path(name).stem, md5_of(body))
    assert verify(tmp_path) == []
    damaged = base / "images_background.zip"
    damaged.write_bytes(archives["images_background.zip"][:-1])
    problems = verify(tmp_path)
    assert len(problems) == 1
    assert re.match(rf"{re.escape(str(damaged))} has MD5 \w+, expected the published "
                    rf"{Omniglot.zips_md5['images_background']}", problems[0]), problems
    # extracted folders whose archives are gone cannot be checked: a problem, not a pass
    for name in ARCHIVES:
        (base / name).unlink()
        (base / Path(name).stem).mkdir()
    problems = verify(tmp_path)
    assert len(problems) == 2
    assert all("is gone" in p and "published checksum cannot be checked" in p for p in problems), problems
