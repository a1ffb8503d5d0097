"""Where the project keeps things: every default location is named here once (the CLI's defaults included).

Code is read from ``PROJECT_ROOT`` (the source checkout, or site-packages for an installed copy, where the folders
``algorithms``, ``datasets``, ``suites`` and ``benchmarks/baselines`` are the packages ``meta_bench.*``: see
pyproject.toml); what the harness writes (stores, caches, reports) goes under ``WORK_ROOT``: ``METABENCH_HOME``
where set, else the checkout, else, for an installed copy, the directory the command runs in. Never into
site-packages.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()  # a source tree (editable or not), not an installed copy


def _folder(package: str, layout: str) -> Path:
    """Where ``package`` is imported from (a checkout's editable install maps it to its folder in the source tree);
    where the layout says, if it cannot be imported at all."""
    spec = importlib.util.find_spec(package)
    return Path(spec.submodule_search_locations[0]).resolve() if spec else PROJECT_ROOT / layout


# the source folders by their names in the source tree, where this process imports them from
SOURCE_DIRS = {"algorithms": _folder("meta_bench.algorithms", "algorithms"),
               "datasets": _folder("meta_bench.datasets", "datasets"), "bench": PROJECT_ROOT / "bench"}
SHIPPED_SUITES = PROJECT_ROOT / ("suites" if CHECKOUT else "meta_bench/suites")
SHIPPED_BASELINE = PROJECT_ROOT / ("benchmarks/baselines" if CHECKOUT else "meta_bench/baselines") / "ci.json"
WORK_ROOT = Path(os.environ["METABENCH_HOME"]).resolve() if os.environ.get("METABENCH_HOME") else (
    PROJECT_ROOT if CHECKOUT else Path.cwd())
RESULTS = WORK_ROOT / "results"  # embedded stores and caches (git-ignored)
DATASET_CACHE = RESULTS / "cache"  # decoded datasets; METABENCH_CACHE overrides it
CHECKPOINTS = RESULTS / "checkpoints"  # cells' training states, to resume mid-training; METABENCH_CHECKPOINTS overrides
AUTOTUNE_CACHE = RESULTS / "autotune.json"  # measured execution choices; METABENCH_AUTOTUNE overrides it
OPTUNA_STORAGE = "sqlite:///results/optuna.db"  # `bench tune`'s default study storage (relative to WORK_ROOT)
# `bench ci-check`'s pinned figures: the repository's. An installed copy compares with the copy it ships unless the
# user pinned their own (--update-baseline writes under the work root, never into site-packages)
OWN_BASELINE = SHIPPED_BASELINE if CHECKOUT else RESULTS / "ci.json"
GATE_BASELINE = OWN_BASELINE if OWN_BASELINE.exists() else SHIPPED_BASELINE
