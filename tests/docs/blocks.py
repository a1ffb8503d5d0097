"""The fenced blocks of the documentation's Markdown, and what the tests do with them.

A tutorial marks what the tests run: a block right after the line ``<!-- test: run -->`` is run (shell commands of
`meta-bench` / `python -m bench` in process, one a line, ``\\`` continuing a line; Python as a script), and a block
with a ``title="PATH"`` is a file the reader writes, written at PATH before the blocks after it run.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_MARK = "<!-- test: run -->"
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)(?P=fence) *$",
                   re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
BENCH = re.compile(r"^(?:\.venv/bin/)?(?:meta-bench|python3? -m bench)(?=\s|$)")


@dataclass(frozen=True)
class Block:
    language: str
    body: str
    title: str  # the file it is, where the fence names one
    run: bool  # marked for the tests to run
    line: int  # where it starts in its page, for messages


def blocks(text: str) -> list[Block]:
    found = []
    for match in FENCE.finditer(text):
        info = match["info"].strip()
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        title = TITLE.search(info)
        body = "\n".join(line[len(match["indent"]):] for line in match["body"].splitlines())
        found.append(Block(info.split()[0] if info else "", body, title["title"] if title else "",
                           before == RUN_MARK, text[:match.start()].count("\n") + 1))
    return found


def command_lines(body: str) -> list[str]:
    """A shell block's commands: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    lines = [line.split(" #")[0].strip() if not line.lstrip().startswith("#") else "" for line in joined.splitlines()]
    return [line for line in lines if line]


def bench_arguments(line: str) -> list[str] | None:
    """The arguments after `meta-bench` / `python -m bench` (the installed script and the module are one CLI); None
    for any other command."""
    prefix = BENCH.match(line)
    return shlex.split(line[prefix.end():]) if prefix else None


def pages() -> list[Path]:
    """Every hand-written page of the site, and the README."""
    return sorted(p for p in (ROOT / "docs").rglob("*.md") if "measurements" not in p.parts) + [ROOT / "README.md"]
