"""The one evaluation path: adapt to each episode's support set, score its query set. Used for validation and test
by every learner alike."""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import torch

from bench.run.measure import PhaseMeter
from meta_bench.algorithms.base import MetaLearner, task_score
from meta_bench.datasets.base import TaskSource
from meta_bench.datasets.episode import Episode


def _passes(predict: Callable[[Episode], torch.Tensor], source: TaskSource, episodes: int, device: torch.device,
            dtype: torch.dtype, meter: PhaseMeter | None, per_pass: int) -> Iterator[tuple[Episode, torch.Tensor]]:
    """(batch, ``predict(batch)``) for episodes 0..episodes-1 in passes of ``per_pass``; ``meter`` times each pass as
    that many episodes, after one untimed warm-up pass whose outputs are unused (where saved-for-backward bytes are
    counted and caches warm)."""
    if meter is not None and meter.warmup and episodes:
        with meter.step(units=meter.warmup):
            predict(source.batch(0, min(per_pass, episodes)).to(device, dtype))
    for first in range(0, episodes, per_pass):
        batch = source.batch(first, min(per_pass, episodes - first)).to(device, dtype)
        with meter.step(units=len(batch)) if meter is not None else contextlib.nullcontext():
            outputs = predict(batch)
        yield batch, outputs


def evaluate(learner: MetaLearner, source: TaskSource, episodes: int, device: torch.device, dtype: torch.dtype,
             meter: PhaseMeter | None = None, per_pass: int = 1) -> list[float]:
    """Per-episode scores (accuracy or MSE) on episodes 0..episodes-1 of ``source``, ``per_pass`` episodes drawn and
    adapted at once (``predict_batch``: each episode on its own support set, as one by one); gradients stay
    enabled because adapting is training."""
    scores = [task_score(learner.task.kind, outputs.detach(), batch.query_y)
              for batch, outputs in _passes(learner.predict_batch, source, episodes, device, dtype, meter, per_pass)]
    return torch.cat(scores).tolist()  # one device read for the whole pass


def evaluate_curve(learner: MetaLearner, source: TaskSource, episodes: int, steps: int, device: torch.device,
                   dtype: torch.dtype, meter: PhaseMeter | None = None, per_pass: int = 1) -> list[list[float]]:
    """Per-episode scores after 0, 1, ..., ``steps`` test-time adaptation steps ([steps + 1][episodes]), from one
    adaptation per episode (``predict_curve``), in passes as ``evaluate``."""
    predict = functools.partial(learner.predict_curve, steps=steps)
    scores = [torch.stack([task_score(learner.task.kind, outputs.detach(), batch.query_y) for outputs in curve])
              for batch, curve in _passes(predict, source, episodes, device, dtype, meter, per_pass)]
    return torch.cat(scores, dim=1).tolist()  # one device read
