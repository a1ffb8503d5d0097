"""One attempt at a cell, as every executor runs it: the cell trained and tested in this process (a Ray worker's, a
Slurm job's, the invocation's own), its own failure turned into a ``Done`` with the reason (the suite goes on), and
where it ran recorded from inside the process that ran it."""
from __future__ import annotations

import math
import traceback
from typing import Callable

import torch

from bench.run.execution import Attempt, Done, cell_code
from bench.run.training import Curve, run_cell
from bench.store import tracking


def collected() -> tuple[list[tuple[str, float, int]], Curve]:
    """Curve points kept for the process that logs them (a Ray worker's or a Slurm job's go back with the result):
    the list, and the callback that fills it (finite values: a diverged point is not a point of a curve)."""
    curves: list[tuple[str, float, int]] = []

    def keep(iteration: int, values: dict[str, float]) -> None:
        curves.extend((name, value, iteration) for name, value in values.items() if math.isfinite(value))

    return curves, keep


def run_attempt(attempt: Attempt, on_train: Curve, on_validation: Curve, curves: list, progress: bool = False,
                between_iterations: Callable[[], None] | None = None, tags: dict[str, str] | None = None) -> Done:
    """Run ``attempt``'s cell here. ``curves``: the points not yet logged when it ends (what ``on_train`` and
    ``on_validation`` collect, for a process that cannot log them itself); ``tags``: the executor's own, to which
    a finished cell adds nothing (its caller may add its end time)."""
    cell = attempt.cell
    environment = tracking.environment_tags(cell.device)
    try:
        result = run_cell(cell, on_train, on_validation, progress, between_iterations=between_iterations,
                          trained=attempt.trained)
    except Exception as error:  # the cell's own failure (not the worker's): FAILED with the reason, no retry
        if isinstance(error, torch.cuda.OutOfMemoryError):  # what it held is freed for the next cell
            torch.cuda.empty_cache()
        return Done(attempt, error=f"{type(error).__name__}: {error}", trace=traceback.format_exc(),
                    code=cell_code(cell), environment=environment, tags=dict(tags or {}))
    return Done(attempt, result, curves, code=cell_code(cell), environment=environment, tags=dict(tags or {}))
