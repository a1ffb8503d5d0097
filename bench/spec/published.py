"""Published results (``bench/data/published.yaml``) and how a measured cell stands against one.

A comparison is made only where it means something: the same dataset *as published* (its size, so a generated
miniature is never taken for the real data) and the same protocol (every key the published result fixes equals the
cell's resolved configuration). Otherwise the verdict is "not comparable" with the reason.
"""
from __future__ import annotations

import functools
import math
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

    @property
    def accuracy(self) -> float:
        return self.value


@functools.lru_cache(maxsize=None)
def series() -> dict[str, list[Published]]:
    (raw,) = yaml_documents(DATA.read_text(encoding="utf-8"), str(DATA))
    out = {}
    for name, entry in raw.items():
        score = entry.get("score", "accuracy")
        out[name] = [Published(name, entry["citation"], entry["dataset"], dict(entry["data"]), r["n_way"], r["k_shot"],
                               float(r[score]), None if r["ci95"] is None else float(r["ci95"]),
                               {**entry["protocol"], **r.get("protocol", {})}, score, r.get("test_k_shot"),
                               r.get("test_steps"))
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


@dataclass(frozen=True)
class Standing:
    difference: float  # measured - published, percentage points
    half_width: float  # of its 95% interval (nan where the paper gives no interval)
    verdict: str


TOLERANCE_RULE = ("a published value without an interval is reproduced when it lies inside the 95% t-interval "
                  "across seeds of the measured mean, widened on each side by {tolerance:.0%} of the published value")


def standing_without_interval(published: Published, per_seed: list[float], tolerance: float,
                              why: list[str]) -> Standing:
    """For a published value the paper gives no interval for: reproduced when it lies inside the 95% t-interval
    across seeds of the measured mean, widened on each side by ``tolerance`` (relative) of the published value
    (``TOLERANCE_RULE``). The interval is across seeds, not episodes: what a rerun of the paper would vary."""
    from scipy import stats  # noqa: PLC0415  (only the report needs it)

    n = len(per_seed)
    mean = sum(per_seed) / n if n else math.nan
    if n < 2:
        half = math.nan
    else:
        std = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / (n - 1))
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    difference = mean - published.value
    if why:
        return Standing(difference, half, "not comparable (" + "; ".join(why) + ")")
    if not math.isfinite(mean):
        return Standing(difference, half, "no verdict: the measured mean is not finite")
    if not math.isfinite(half):
        return Standing(difference, half, "no verdict: one seed gives no interval across seeds")
    allowed = half + tolerance * abs(published.value)
    return Standing(difference, allowed, "reproduced" if abs(difference) <= allowed else "not reproduced")


def standing(published: Published, measured: float, measured_half: float, why: list[str]) -> Standing:
    """Measured (percent, with its 95% half-width) against published: reproduced when the interval of the
    difference (both intervals combined in quadrature) holds 0."""
    difference = measured - published.value
    half = math.sqrt(measured_half ** 2 + (published.ci95 or 0.0) ** 2)  # nan with no measured interval
    if why:
        return Standing(difference, half, "not comparable (" + "; ".join(why) + ")")
    if not math.isfinite(half):
        return Standing(difference, half, "no verdict: the measurement has no interval (one seed, one episode)")
    return Standing(difference, half, "reproduced" if abs(difference) <= half else "not reproduced")
