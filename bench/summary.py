"""The table printed at the end of `bench run`: learner x cell, accuracy +- CI, ms per meta-iteration, memory."""
from __future__ import annotations

import math

import pandas as pd

from bench.runner import Outcome


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value / scale:.{digits}f}"


def summary_table(outcomes: list[Outcome]) -> str:
    rows = []
    for o in outcomes:
        m, c = o.metrics, o.cell
        score_key = "test_accuracy" if "test_accuracy" in m else "test_mse"
        score = m.get(score_key)
        ci = m.get(f"{score_key}_ci95")
        rows.append({"learner": c.label, "N": c.n_way, "K": c.k_shot,
                     "S": getattr(c.learner_config, "inner_steps", "-"), "device": c.device, "seed": c.seed,
                     "outcome": o.outcome,
                     "score": "-" if score is None else f"{_fmt(score, 0.01 if score_key == 'test_accuracy' else 1, 2)}"
                                                     f" ± {_fmt(ci, 0.01 if score_key == 'test_accuracy' else 1, 2)}"
                                                     f"{'%' if score_key == 'test_accuracy' else ' mse'}",
                     "ms/iter": _fmt(m.get("train_ms_median")),
                     "saved MB": _fmt(m.get("train_saved_bytes_peak"), 1e6, 3),
                     "cuda MB": _fmt(m.get("train_cuda_peak_bytes"), 1e6),
                     "rss MB": _fmt(m.get("train_rss_peak_bytes"), 1e6, 0),
                     "note": o.detail[:60]})
    return pd.DataFrame(rows).to_string(index=False) if rows else "(no cells)"
