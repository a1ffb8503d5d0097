"""The table printed at the end of `bench run`: learner x cell, accuracy +- CI, ms per meta-iteration, memory."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from bench.runner import Outcome


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value / scale:.{digits}f}"


def format_score(score: str, mean: float | None, ci: float | None) -> str:
    """``61.38 ± 1.85%`` for accuracy, ``0.40 ± 0.05`` for MSE: one format for the summary and the report."""
    if mean is None:
        return "-"
    scale, unit = (0.01, "%") if score == "accuracy" else (1.0, "")
    return f"{_fmt(mean, scale, 2)} ± {_fmt(ci, scale, 2)}{unit}"


def summary_table(outcomes: list[Outcome]) -> str:
    rows = []
    for o in outcomes:
        m, c = o.metrics, o.cell
        score = "accuracy" if "test_accuracy" in m else "mse"
        rows.append({"learner": c.label, "N": c.n_way, "K": c.k_shot,
                     "S": getattr(c.learner_config, "inner_steps", "-"), "device": c.device, "seed": c.seed,
                     "outcome": o.outcome,
                     f"test {score}": format_score(score, m.get(f"test_{score}"), m.get(f"test_{score}_ci95")),
                     "ms/iter": _fmt(m.get("train_ms_median")),
                     "saved MB": _fmt(m.get("train_saved_bytes_peak"), 1e6, 3),
                     "cuda MB": _fmt(m.get("train_cuda_peak_bytes"), 1e6),
                     "rss MB": _fmt(m.get("train_rss_peak_bytes"), 1e6, 0),
                     "note": o.detail[:60]})
    return pd.DataFrame(rows).to_string(index=False) if rows else "(no cells)"
