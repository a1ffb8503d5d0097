"""`bench ci-check`: the regression gate a user puts in CI. Deterministic checks (gradients, float64 accuracy,
saved-for-backward bytes, memory flat across iterations) against a baseline kept in the repository; with ``--perf``
the speed of every learner's meta-iteration as a ratio to a reference workload timed in the same process.

Why a ratio: shared CI machines vary 10-30% from run to run and between machines, so absolute times never decide.
A learner's time divided by a fixed matrix-multiply workload's time, both measured in the same process moments
apart, cancels most of that; the tolerance covers the rest (measured spread: README).
"""
from __future__ import annotations

import gc
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from bench.core import metrics as m
from bench.core.paths import GATE_BASELINE
from bench.run.measure import SavedTensorTracker, saved_bytes_of, time_steps
from bench.run.problems import Problem, meta_iteration
from meta_bench.algorithms import LEARNERS

BASELINE = GATE_BASELINE
SCORE_TOLERANCE = 1e-9  # float64 on the CPU with a fixed seed and torch version: equal up to rounding
PERF_TOLERANCE = 0.5  # a learner may be 1.5x its baseline ratio before the gate fails


WORKLOADS = (Problem("glyphs", 5, 1, query=15, tasks=8, inner_steps=1, name="5w1s-B8-S1"),
             Problem("glyphs", 5, 5, query=15, tasks=4, inner_steps=5, name="5w5s-B4-S5"),
             Problem("sinusoid", 1, 10, query=10, tasks=25, inner_steps=1, name="sinusoid-B25-S1"))
# small: counted bytes, not timed
MEMORY = Problem("glyphs", 5, 1, query=3, tasks=2, filters=8, inner_steps=2, name="5w1s-B2-S2-f8")


# -- deterministic figures -------------------------------------------------------------------------------------

def _quiet(line: str) -> None:
    """Where a caller wants no progress lines (tests, library use)."""


def pinned_scores(echo: Callable[[str], None] = _quiet) -> dict[str, float]:
    """Test accuracy of every registered learner on a pinned tiny float64 suite (CPU, seed 0). Plain SGD, not Adam:
    Adam is blind to the scale of a gradient, and a wrong scale is a regression to catch."""
    from bench.spec.suite import parse_suite  # noqa: PLC0415
    from bench.run.training import run_cell  # noqa: PLC0415

    suite = parse_suite({
        "suite": "ci-gate", "dataset": {"name": "glyphs"}, "learners": LEARNERS.names(),
        "grid": {"n_way": [5], "k_shot": [1], "devices": ["cpu"], "seeds": [0]}, "backbone": {"filters": 8},
        "training": {"meta_iterations": 8, "meta_batch_size": 2, "query": 3, "validate_every": 8,
                     "validation_episodes": 2, "warmup_iterations": 0, "dtype": "float64", "optimizer": "sgd",
                     "lr": 0.5},
        "evaluation": {"test_episodes": 20, "query": 3, "warmup_episodes": 0}}, "ci-gate")
    scores = {}
    for cell in suite.cells:  # minutes in all: a line per learner, so the phase is never silent
        started = time.perf_counter()
        scores[cell.learner] = run_cell(cell).metrics[m.SCORES["accuracy"].name]
        echo(f"    {cell.learner}: test accuracy {scores[cell.learner]:.6f} ({time.perf_counter() - started:.1f} s)")
    return scores


def saved_bytes(echo: Callable[[str], None] = _quiet) -> dict[str, int]:
    """Peak bytes saved for backward by one meta-iteration of every learner at the memory workload."""
    batch = MEMORY.batch()
    saved = {}
    for name in LEARNERS.names():
        saved[name] = saved_bytes_of(meta_iteration(MEMORY.learner(name), batch))
        echo(f"    {name}: {saved[name]} bytes saved for backward")
    return saved


def _live_tensor_bytes() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on every object touches deprecated torch attributes
        warnings.simplefilter("ignore", FutureWarning)
        return sum(o.untyped_storage().nbytes() for o in gc.get_objects() if isinstance(o, torch.Tensor))


def memory_growth(name: str, iterations: int = 20) -> tuple[int, int]:
    """(live tensor bytes after 2 meta-iterations, after ``iterations``) with the outer optimiser stepping: a learner
    that keeps graphs, gradients or histories alive grows; a correct one stays flat. Also fails if any tensor saved
    for backward outlives its iteration."""
    learner = MEMORY.learner(name)
    optimizer = torch.optim.Adam(learner.meta_parameters(), lr=1e-3)
    tracker = SavedTensorTracker()
    sizes = []
    for i in range(iterations):
        optimizer.zero_grad(set_to_none=True)
        with tracker.track():
            learner.meta_gradient(MEMORY.batch(first=i * MEMORY.tasks))
        optimizer.step()
        if tracker.live:
            raise AssertionError(f"{name}: {tracker.live} bytes saved for backward outlive meta-iteration {i}")
        if i in (1, iterations - 1):
            sizes.append(_live_tensor_bytes())
    return sizes[0], sizes[1]


# -- speed -----------------------------------------------------------------------------------------------------

def median_seconds(step: Callable[[], None], repeats: int = 3) -> float:
    """After one warm-up call, through the measurement module's clock."""
    return statistics.median(time_steps(step, repeats, torch.device("cpu")).times)


def reference_seconds() -> float:
    """A fixed workload of the same kind (convolution-sized matrix multiplies) timed in this process."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    return median_seconds(lambda: [a @ b for _ in range(20)], repeats=5)


def speed_ratios(workload: Problem = WORKLOADS[0]) -> dict[str, float]:
    """Every learner's meta-iteration time over the reference workload's, interleaved so both see the same load."""
    batch = workload.batch()
    ratios = {}
    for name in LEARNERS.names():
        step = meta_iteration(workload.learner(name), batch)
        ratios[name] = median_seconds(step) / reference_seconds()
    return ratios


# -- the gate --------------------------------------------------------------------------------------------------

def measure(perf: bool, echo: Callable[[str], None] = _quiet) -> dict:
    figures = {"torch": torch.__version__, "scores": pinned_scores(echo), "saved_bytes": saved_bytes(echo)}
    if perf:
        figures["speed_ratio"] = speed_ratios()
    return figures


def same_torch(baseline: dict, measured: dict) -> bool:
    """Pinned figures hold for the torch version that made them; another one needs a refresh, not a verdict."""
    return baseline.get("torch") == measured["torch"]


def unpinned(baseline: dict, measured: dict) -> list[str]:
    """Learners measured that the baseline has no figures for (added since): noted, not failed, so adding a learner
    is one file; ``--update-baseline`` pins them."""
    return sorted(set(measured["scores"]) - set(baseline["scores"]))


def compare(baseline: dict, measured: dict, perf_tolerance: float = PERF_TOLERANCE) -> list[str]:
    """What regressed, one line each naming the learner and the figure (empty: the gate passes)."""
    if not same_torch(baseline, measured):
        return [f"baseline from another torch ({baseline.get('torch')}, this is {measured['torch']}): refresh it "
                f"with `python -m bench ci-check --update-baseline` and review the diff"]
    failures = []
    for name in sorted(baseline["scores"]):
        old, new = baseline["scores"][name], measured["scores"].get(name)
        if new is None:
            failures.append(f"{name}: test accuracy not measured (a pinned learner is gone)")
        elif not math.isclose(old, new, rel_tol=0, abs_tol=SCORE_TOLERANCE):
            failures.append(f"{name}: test accuracy {new:.6f} on the pinned float64 suite, baseline {old:.6f} "
                            f"(tolerance {SCORE_TOLERANCE})")
    for name, new in measured["saved_bytes"].items():
        old = baseline["saved_bytes"].get(name)
        if old is not None and old != new:
            failures.append(f"{name}: saved-for-backward bytes {new}, baseline {old}")
    for name, new in measured.get("speed_ratio", {}).items():
        old = baseline.get("speed_ratio", {}).get(name)
        if old is not None and new > old * (1 + perf_tolerance):
            failures.append(f"{name}: meta-iteration takes {new:.2f}x the reference workload, baseline {old:.2f}x "
                            f"(+{100 * (new / old - 1):.0f}%, tolerance +{100 * perf_tolerance:.0f}%)")
    return failures


def flatness_failures(names: list[str] | None = None, echo: Callable[[str], None] = _quiet) -> list[str]:
    failures = []
    for name in names or LEARNERS.names():
        early, late = memory_growth(name)
        echo(f"    {name}: live tensor bytes {early} after 2 meta-iterations, {late} after 20")
        if late > early:
            failures.append(f"{name}: live tensor memory grew from {early} to {late} bytes over 20 meta-iterations")
    return failures


def write_baseline(path: Path, figures: dict) -> None:
    """Write ``figures`` as the baseline; a refresh without speed ratios keeps the stored ones."""
    old = json.loads(path.read_text()) if path.exists() else {}
    if "speed_ratio" not in figures and "speed_ratio" in old:
        figures = {**figures, "speed_ratio": old["speed_ratio"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)
