"""The one metric schema: every figure a cell produces, by its MLflow name, with unit, direction and format.

The measurement module writes these names, the runner logs them, and the summary, the report and the benchmarks
read and format them from here, so a metric is spelled once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# suffixes a PhaseMeter writes after its phase prefix ("train_", "eval_")
MS_MEDIAN, MS_P90, SECONDS_TOTAL, TIMED_STEPS = "ms_median", "ms_p90", "seconds_total", "timed_steps"
SAVED_BYTES_PEAK, RSS_PEAK_BYTES, CUDA_PEAK_BYTES = "saved_bytes_peak", "rss_peak_bytes", "cuda_peak_bytes"


@dataclass(frozen=True)
class Metric:
    name: str  # as logged to MLflow
    label: str  # column header
    unit: str  # displayed unit ("%" for accuracy)
    direction: Literal["higher", "lower", "none"]  # which way is better
    scale: float = 1.0  # stored value / scale = displayed value
    digits: int = 1
    difference_unit: str = ""  # a difference's unit ("pp": percentage points of accuracy)
    # what a score is, for what is drawn and checked beside it: a proportion of correct answers (chance is 1/N), an
    # error (non-negative, spans orders of magnitude, judged against predicting 0); a cost is neither
    kind: Literal["proportion", "error", "cost"] = "cost"

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    def format(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "-"
        return f"{value / self.scale:.{self.digits}f}"

    def signed(self, difference: float) -> str:
        """A difference of two values in the displayed unit: ``+1.25pp`` for accuracy, ``-0.0123`` for MSE."""
        if not math.isfinite(difference):
            return "-"
        return f"{difference / self.scale:+.{self.digits}f}{self.difference_unit}"

    def axis_label(self) -> str:
        """``test accuracy (%, higher is better)``: the label with its unit and which way is better."""
        unit = f"{self.unit}, " if self.unit else ""
        return f"{self.label} ({unit}{self.direction} is better)"


def phase(prefix: str, suffix: str) -> str:
    return f"{prefix}_{suffix}"


SCORES = {
    "accuracy": Metric("test_accuracy", "test accuracy", "%", "higher", scale=0.01, digits=2, difference_unit="pp",
                       kind="proportion"),
    "mse": Metric("test_mse", "test MSE", "", "lower", digits=4, kind="error"),
}
DEFAULT_SCORE = "accuracy"  # a run that recorded no score name (none finished)
TRAIN_MS = Metric(phase("train", MS_MEDIAN), "ms / meta-iter (median)", "ms", "lower")
TRAIN_MS_P90 = Metric(phase("train", MS_P90), "ms / meta-iter (p90)", "ms", "lower")
TRAIN_SECONDS = Metric(phase("train", SECONDS_TOTAL), "timed meta-iterations s (no warm-up, no validation)", "s",
                       "lower")
SAVED_MB = Metric(phase("train", SAVED_BYTES_PEAK), "saved-for-backward MB", "MB", "lower", scale=1e6, digits=3)
CUDA_MB = Metric(phase("train", CUDA_PEAK_BYTES), "CUDA peak MB (meta-iterations)", "MB", "lower", scale=1e6)
RSS_MB = Metric(phase("train", RSS_PEAK_BYTES), "RSS peak MB (meta-iterations)", "MB", "lower", scale=1e6, digits=0)
EVAL_MS = Metric(phase("eval", MS_MEDIAN), "ms / test episode (median)", "ms", "lower")
VAL_SECONDS = phase("val", SECONDS_TOTAL)  # validation passes during meta-training, in all
CELL_SECONDS = phase("cell", SECONDS_TOTAL)  # the whole cell: data, autotuning, meta-training, validation, test
COSTS = (TRAIN_MS, TRAIN_MS_P90, EVAL_MS, SAVED_MB, CUDA_MB, RSS_MB, TRAIN_SECONDS)

# where a cell's wall-clock went (bench.run.phases): every interval of run_cell is one phase's, so they add up to
# CELL_SECONDS; the final store writes come after it (STORE_SECONDS)
TIME_PHASES = {"setup": "set-up and data", "autotune": "autotuning", "sampling": "drawing episodes",
               "steps": "meta-iterations", "between": "between iterations", "logging": "curves to the store",
               "validation": "validation", "test": "test", "other": "other"}


def time_in(phase_name: str) -> str:
    return f"time_{phase_name}_seconds"


STORE_SECONDS = time_in("store")  # the cell's results written to the store after run_cell

# curves logged during training (step = meta-iteration; a cell of over 1,000 meta-iterations logs the mean of each
# window of iterations at the window's last: bench.run.training.CurveWindow)
TRAIN_LOSS, TRAIN_QUERY_SCORE, VAL_SCORE = "train_loss", "train_query_score", "val_score"
FINAL_TRAIN_LOSS, FINAL_VAL_SCORE = "final_train_loss", "final_val_score"
OBJECTIVE_SCORE = "objective_score"  # a `bench tune` trial's value: its final validation score


def support_loss(step: int) -> str:
    """The mean support loss before inner step ``step`` (a curve over meta-iterations)."""
    return f"train_support_loss_step{step}"


def learner_curves(key: str, size: int) -> list[str]:
    """The curves a learner's step metric ``key`` (``StepResult.metrics``) of ``size`` values is logged as: the
    adapted query score is one curve, the support losses one per inner step; a metric of a learner's own is
    ``train_<key>`` (``train_<key>_<i>`` for several values)."""
    if key == "query_score" and size == 1:
        return [TRAIN_QUERY_SCORE]
    if key == "inner_losses":
        return [support_loss(step) for step in range(size)]
    return [f"train_{key}"] if size == 1 else [f"train_{key}_{i}" for i in range(size)]


def under(name: str, k_shot: int, steps: int | None) -> str:
    """A test metric under one test condition: ``test_mse.k5.s10`` (K support shots, after S steps; no ``.s``
    part for a learner that adapts in no steps)."""
    return f"{name}.k{k_shot}" + ("" if steps is None else f".s{steps}")


TEST_DIVERGED = "test_diverged"  # test episodes scored non-finite or absurd (evaluation.divergence_factor)


def ci95(score: str) -> str:
    return f"{SCORES[score].name}_ci95"


def format_score(score: str, mean: float | None, half_width: float | None) -> str:
    """``61.38 ± 1.85%`` for accuracy, ``0.4012 ± 0.0500`` for MSE: one format everywhere."""
    metric = SCORES[score]
    if mean is None or not math.isfinite(mean):
        return "-"
    return f"{metric.format(mean)} ± {metric.format(half_width)}{metric.unit}"
