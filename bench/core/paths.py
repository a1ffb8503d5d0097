"""Where the project keeps things: every default location is named here once (the CLI's defaults included).

Code is read from ``PROJECT_ROOT`` (the source checkout, or site-packages for an installed copy); what the harness
writes (stores, caches, reports) goes under ``WORK_ROOT``: ``METABENCH_HOME`` where set, else the checkout, else, for
an installed copy, the directory the command runs in. Never into site-packages.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()  # a source tree (editable or not), not an installed copy
WORK_ROOT = Path(os.environ["METABENCH_HOME"]).resolve() if os.environ.get("METABENCH_HOME") else (
    PROJECT_ROOT if CHECKOUT else Path.cwd())
RESULTS = WORK_ROOT / "results"  # embedded stores and caches (git-ignored)
DATASET_CACHE = RESULTS / "cache"  # decoded datasets; METABENCH_CACHE overrides it
AUTOTUNE_CACHE = RESULTS / "autotune.json"  # measured execution choices; METABENCH_AUTOTUNE overrides it
OPTUNA_STORAGE = "sqlite:///results/optuna.db"  # `bench tune`'s default study storage (relative to WORK_ROOT)
# `bench ci-check`'s pinned figures: the repository's; an installed copy's own, under the work root
GATE_BASELINE = (PROJECT_ROOT / "benchmarks" / "baselines" if CHECKOUT else RESULTS) / "ci.json"
