"""Published results (``bench/data/published.yaml``) and how a measured cell stands against one.

A comparison is made only where it means something: the same dataset *as published* (its size, so a generated
miniature is never taken for the real data) and the same protocol (every key the published result fixes equals the
cell's resolved configuration). Otherwise the verdict is "not comparable" with the reason.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from bench.core.config import flatten, yaml_documents

DATA = Path(__file__).resolve().parent / "data" / "published.yaml"


@dataclass(frozen=True)
class Published:
    series: str
    citation: str
    dataset: str
    data: dict
    n_way: int
    k_shot: int  # the meta-training K
    value: float  # accuracy in percent, or the mean squared error
    ci95: float | None
    protocol: dict
    score: str = "accuracy"  # "accuracy" or "mse"
    test_k_shot: int | None = None  # the test condition where the paper tests otherwise than it trains
    test_steps: int | None = None
    margin: tuple[str, float] = ("absolute", 2.0)  # ("absolute", in the value's unit) or ("relative", of the value)

    @property
    def margin_value(self) -> float:
        """How far a measurement may lie from the value and still reproduce it, in the value's unit."""
        kind, size = self.margin
        return size * abs(self.value) if kind == "relative" else size

    @property
    def accuracy(self) -> float:
        return self.value


# the margin of a series that declares none (the README states them): 2 percentage points of accuracy, 20% of an
# error (errors after few-shot adaptation are heavy-tailed: one trained model's mean over 600 sinusoid tasks ranged
# from 0.39 to 0.80 across four draws of the tasks)
DEFAULT_MARGINS = {"accuracy": ("absolute", 2.0), "mse": ("relative", 0.2)}


def _margin(name: str, entry: dict, score: str) -> tuple[str, float]:
    declared = entry.get("margin")
    if declared is None:
        return DEFAULT_MARGINS[score]
    if not (isinstance(declared, dict) and len(declared) == 1 and next(iter(declared)) in ("absolute", "relative")
            and isinstance(next(iter(declared.values())), (int, float)) and next(iter(declared.values())) > 0):
        raise ValueError(f"{DATA}: {name}.margin must be {{absolute: X}} or {{relative: X}} with X > 0, got "
                         f"{declared!r}")
    ((kind, size),) = declared.items()
    return kind, float(size)


@functools.lru_cache(maxsize=None)
def series() -> dict[str, list[Published]]:
    (raw,) = yaml_documents(DATA.read_text(encoding="utf-8"), str(DATA))
    out = {}
    for name, entry in raw.items():
        score = entry.get("score", "accuracy")
        out[name] = [Published(name, entry["citation"], entry["dataset"], dict(entry["data"]), r["n_way"], r["k_shot"],
                               float(r[score]), None if r["ci95"] is None else float(r["ci95"]),
                               {**entry["protocol"], **r.get("protocol", {})}, score, r.get("test_k_shot"),
                               r.get("test_steps"), _margin(name, entry, score))
                     for r in entry["results"]]
    return out


def find(name: str, n_way: int, k_shot: int) -> Published | None:
    """The result of a series at (N, K) that names no test condition of its own."""
    return next((p for p in series()[name] if (p.n_way, p.k_shot) == (n_way, k_shot) and p.test_k_shot is None),
                None)


def under_conditions(name: str, n_way: int, k_shot: int) -> list[Published]:
    """The results of a series at (N, training K) that name their test K and test steps."""
    return [p for p in series()[name] if (p.n_way, p.k_shot) == (n_way, k_shot) and p.test_k_shot is not None]


def differences(published: Published, resolved: dict[str, Any], dataset: str, statistics: dict) -> list[str]:
    """Why a cell is not comparable with ``published`` (empty: it is)."""
    why = []
    if dataset != published.dataset:
        why.append(f"dataset {dataset}, published on {published.dataset}")
    else:
        for key, expected in published.data.items():
            if statistics.get(key) != expected:
                why.append(f"data: {statistics.get(key)} {key}, the published data has {expected}")
    ours = flatten(resolved)
    for key, expected in published.protocol.items():
        if ours.get(key, "(absent)") != expected:
            why.append(f"{key}={ours.get(key, '(absent)')} (published: {expected})")
    return why
