"""The one builder of small meta-learning problems outside a suite: the regression gate, ``bench verify``, the
benchmarks and the tests all take their learners and batches from here, built exactly as a suite's cell builds them
(``factory.new_learner``: the dataset's backbone, initial weights from the seed alone)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from bench.run.factory import new_learner, new_model, task_of
from meta_bench.algorithms import LEARNERS, MetaLearner, TaskSpec
from meta_bench.algorithms.backbones import BackboneConfig
from meta_bench.datasets import Episode, load_dataset


@dataclass(frozen=True)
class Problem:
    """``tasks`` meta-training episodes of ``dataset`` at ``n_way``-way ``k_shot``-shot with ``query`` queries per
    class, for a learner on the dataset's backbone (``filters`` 0: its default width). ``inner_steps``, where given,
    is every learner's that has the option; ``seed`` draws both the episodes and the initial weights."""

    dataset: str = "glyphs"
    n_way: int = 5
    k_shot: int = 1
    query: int = 3
    tasks: int = 2
    filters: int = 0
    inner_steps: int | None = None
    seed: int = 0
    name: str = ""  # how a benchmark or the gate refers to it

    def batch(self, first: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
              ) -> Episode:
        """Episodes ``first`` .. ``first + tasks - 1`` of the seed's meta-training stream."""
        sampler = load_dataset(self.dataset).sampler("train", self.n_way, self.k_shot, self.query, self.seed)
        return sampler.batch(first, self.tasks).to(device, dtype)

    def learner(self, name: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                **options) -> MetaLearner:
        if self.inner_steps is not None and "inner_steps" in LEARNERS[name].Config.__dataclass_fields__:
            options.setdefault("inner_steps", self.inner_steps)
        return new_learner(self.dataset, name, options, self.n_way, backbone=BackboneConfig(filters=self.filters),
                           seed=self.seed, device=device, dtype=dtype)

    def task(self) -> TaskSpec:
        return task_of(load_dataset(self.dataset), self.n_way, self.seed)

    def model(self, dtype: torch.dtype = torch.float32, **backbone) -> nn.Module:
        """A fresh model with the seed's initial weights (``backbone``: further backbone options)."""
        return new_model(self.dataset, self.n_way, backbone=BackboneConfig(filters=self.filters, **backbone),
                         seed=self.seed, dtype=dtype)


def meta_iteration(learner: MetaLearner, batch: Episode) -> Callable[[], None]:
    """One meta-iteration of ``learner`` on ``batch`` without the outer step: what benchmarks time."""
    def step():
        for p in learner.meta_parameters():
            p.grad = None
        learner.meta_gradient(batch)
    return step
