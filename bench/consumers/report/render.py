"""One document, two renderings: Markdown (figures beside it as PNG) and a self-contained HTML page."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Items:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame


@dataclass(frozen=True)
class Image:
    title: str
    path: Path


Block = Heading | Text | Items | Table | Image


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)"
    # each cell as text, a missing value as "-" (pandas 3's astype(str) keeps NaN a float)
    rows = [["-" if isinstance(v, float) and v != v else str(v) for v in row] for row in frame.to_numpy().tolist()]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row).replace("\n", " ") + " |" for row in rows])


def markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Items):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(_markdown_table(block.frame))
        else:
            parts.append(f"![{block.title}]({block.path.name})")
    return "\n\n".join(parts) + "\n"


def page(title: str, blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Items):
            parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts.append(block.frame.to_html(index=False) if not block.frame.empty else "<p>(none)</p>")
        else:
            data = base64.b64encode(block.path.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(block.title)}' src='data:image/png;base64,{data}'/>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}"
            "img{max-width:100%}</style></head><body>" + "".join(parts) + "</body></html>")
