"""Where the project keeps things: every default location is named here once (the CLI's defaults included)."""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESULTS = PROJECT_ROOT / "results"  # embedded stores and caches (git-ignored)
DATASET_CACHE = RESULTS / "cache"  # decoded datasets; METABENCH_CACHE overrides it
AUTOTUNE_CACHE = RESULTS / "autotune.json"  # measured execution choices; METABENCH_AUTOTUNE overrides it
OPTUNA_STORAGE = "sqlite:///results/optuna.db"  # `bench tune`'s default study storage (relative to the project)
GATE_BASELINE = PROJECT_ROOT / "benchmarks" / "baselines" / "ci.json"  # `bench ci-check`'s pinned figures
