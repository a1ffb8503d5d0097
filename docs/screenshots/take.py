"""The pictures of the documentation, taken in headless Chromium: rerun when the report or the site changes.

    .venv/bin/python docs/screenshots/take.py report [--html reports/quickstart/report.html]   # README and site
    .venv/bin/python docs/screenshots/take.py site                                  # after `make docs`: 2 pages

``report`` shows the quickstart's real HTML report (`make demo` writes it), cut to its conclusions and its first
figure, as docs/screenshots/report.png. ``site`` serves build/site and takes its home page and a tutorial.
Chromium: ``apt-get install chromium`` (or set CHROMIUM to its binary).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import subprocess
import tempfile
import threading
from pathlib import Path

from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REPORT = ROOT / "reports" / "quickstart" / "report.html"
SITE = ROOT / "build" / "site"
WIDTH = 900  # pixels of the committed picture: readable on GitHub, well under 300 KB
# without the background-networking flags, Chromium waits on refused connections and never writes the picture
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def chromium_screenshot(url: str, out: Path, width: int, height: int) -> None:
    binary = os.environ.get("CHROMIUM", "chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
                        f"--window-size={width},{height}", url], check=True, capture_output=True, timeout=120)
    if not out.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot of {url}")


def cut(html: str) -> str:
    """The report's page with its conclusions (and the header list under them) and its first figure alone."""
    markers = ("<h2>Conclusions</h2>", "<h2>Dataset</h2>", "<h2>Figures</h2>", "<h3>", "</h3>", "<img", ">")
    conclusions, dataset, figures = (html.index(m) for m in markers[:3])
    heading = html.index(markers[3], figures)
    image_end = html.index(markers[6], html.index(markers[5], heading)) + 1
    return html[:dataset] + html[figures:image_end] + "</body></html>"


def trimmed(image: Image.Image, margin: int = 16) -> Image.Image:
    """Without the blank space below and right of the content."""
    box = ImageChops.difference(image, Image.new(image.mode, image.size, "white")).getbbox()
    return image if box is None else image.crop((0, 0, min(box[2] + margin, image.width),
                                                 min(box[3] + margin, image.height)))


def take_report(html: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        page, raw = Path(folder) / "report.html", Path(folder) / "raw.png"
        page.write_text(cut(html.read_text(encoding="utf-8")), encoding="utf-8")
        chromium_screenshot(page.as_uri(), raw, 1100, 1500)
        image = trimmed(Image.open(raw).convert("RGB"))
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"{out}: {image.width}x{image.height}, {out.stat().st_size // 1024} KB")


@contextlib.contextmanager
def served(folder: Path):
    """``folder`` over HTTP on a free port of 127.0.0.1, for as long as the block runs: its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # one line per request would bury the script's own output
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def take_site(out_dir: Path) -> None:
    if not (SITE / "index.html").is_file():
        raise SystemExit(f"no site at {SITE}: run `make docs` first")
    with served(SITE) as base:
        for name, path in (("site_home.png", ""), ("site_tutorial.png", "tutorials/compare-learners/")):
            chromium_screenshot(base + path, out_dir / name, 1400, 900)  # wide enough for the navigation
            print(f"{out_dir / name}: {(out_dir / name).stat().st_size // 1024} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["report", "site"])
    parser.add_argument("--html", type=Path, default=REPORT, help="the report to show (default: the quickstart's)")
    args = parser.parse_args()
    if args.what == "report":
        take_report(args.html, HERE / "report.png")
    else:
        take_site(HERE)


if __name__ == "__main__":
    main()
