"""The one evaluation path: adapt to each episode's support set, score its query set. Used for validation and test
by every learner alike."""
from __future__ import annotations

import contextlib

import torch

from algorithms.base import MetaLearner, task_score
from bench.run.measure import PhaseMeter
from datasets.base import TaskSource


def evaluate(learner: MetaLearner, source: TaskSource, episodes: int, device: torch.device, dtype: torch.dtype,
             meter: PhaseMeter | None = None, per_pass: int = 1) -> list[float]:
    """Per-episode scores (accuracy or MSE) on episodes 0..episodes-1 of ``source``, ``per_pass`` episodes drawn and
    adapted at once (``predict_batch``: each episode on its own support set, as one by one); gradients stay
    enabled because adapting is training. ``meter`` times each pass as that many episodes, after one untimed warm-up
    pass."""
    scores = []
    if meter is not None and meter.warmup and episodes:  # an untimed first pass, its outputs unused: where
        # saved-for-backward bytes are counted and caches warm; every scored pass is then timed
        with meter.step(units=meter.warmup):
            learner.predict_batch(source.batch(0, min(per_pass, episodes)).to(device, dtype))
    for first in range(0, episodes, per_pass):
        count = min(per_pass, episodes - first)
        batch = source.batch(first, count).to(device, dtype)
        with meter.step(units=count) if meter is not None else contextlib.nullcontext():
            outputs = learner.predict_batch(batch)
        scores.append(task_score(learner.task.kind, outputs.detach(), batch.query_y))
    return torch.cat(scores).tolist()  # one device read for the whole pass


def evaluate_curve(learner: MetaLearner, source: TaskSource, episodes: int, steps: int, device: torch.device,
                   dtype: torch.dtype, meter: PhaseMeter | None = None, per_pass: int = 1) -> list[list[float]]:
    """Per-episode scores after 0, 1, ..., ``steps`` test-time adaptation steps ([steps + 1][episodes]), from one
    adaptation per episode (``predict_curve``), in passes of ``per_pass`` episodes as ``evaluate``."""
    scores = []
    if meter is not None and meter.warmup and episodes:
        with meter.step(units=meter.warmup):
            learner.predict_curve(source.batch(0, min(per_pass, episodes)).to(device, dtype), steps)
    for first in range(0, episodes, per_pass):
        count = min(per_pass, episodes - first)
        batch = source.batch(first, count).to(device, dtype)
        with meter.step(units=count) if meter is not None else contextlib.nullcontext():
            curve = learner.predict_curve(batch, steps)
        scores.append(torch.stack([task_score(learner.task.kind, outputs.detach(), batch.query_y)
                                   for outputs in curve]))
    return torch.cat(scores, dim=1).tolist()  # one device read
