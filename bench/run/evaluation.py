"""The one evaluation path: adapt to each episode's support set, score its query set. Used for validation and test
by every learner alike."""
from __future__ import annotations

import contextlib

import torch

from algorithms.base import MetaLearner, task_score
from bench.run.measure import PhaseMeter
from datasets.base import TaskSource


def evaluate(learner: MetaLearner, source: TaskSource, episodes: int, device: torch.device, dtype: torch.dtype,
             meter: PhaseMeter | None = None) -> list[float]:
    """Per-episode scores (accuracy or MSE) on episodes 0..episodes-1 of ``source``; gradients stay enabled
    because adapting is training."""
    scores = []
    for index in range(episodes):
        episode = source.episode(index).to(device, dtype)
        with meter.step() if meter is not None else contextlib.nullcontext():
            output = learner.predict(episode)
        scores.append(task_score(learner.task.kind, output.detach(), episode.query_y))
    return torch.stack(scores).tolist()  # one device read for the whole pass
