"""`sinusoid`: the regression tasks of Finn et al. 2017, through the same episode type.

Amplitude ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]; K support and Q query points; mean squared error.
Tasks are drawn from a continuous family, so the splits differ only by their random streams.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from meta_bench.datasets.base import (SPLITS, DataRequestError, Dataset, TaskSource, check_episode_shape, check_split,
                                     episode_uniforms)
from meta_bench.datasets.episode import Episode
from meta_bench.datasets.content import generated
from meta_bench.datasets.registry import register_dataset


@dataclass(frozen=True)
class SinusoidOptions:
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self) -> None:
        for name in ("amplitude", "phase", "x_range"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"sinusoid.{name} must be [low, high] with low < high, got {[low, high]}")


class SinusoidTasks(TaskSource):
    """Each episode's numbers are its own counter-based stream (``episode_uniforms``); a batch draws them in one call
    and builds every tensor once: the same episodes as one at a time."""

    def __init__(self, o: SinusoidOptions, split: str, k_shot: int, q_query: int, seed: int):
        self.o, self.split, self.k_shot, self.q_query, self.seed = o, split, k_shot, q_query, seed

    def episode(self, index: int) -> Episode:
        return self.batch(index, 1).task(0)

    def batch(self, first: int, count: int) -> Episode:
        points = self.k_shot + self.q_query
        # an episode's doubles (``episode_uniforms``, one call for the batch): amplitude, phase, then the points' x,
        # each an affine map of its double as numpy's uniform(low, high) is
        unit = episode_uniforms(self.seed, self.split, first, count, points + 2)
        o = self.o
        # float32 numpy for the arithmetic (a dozen tensor operations on arrays this small cost more than the draw)
        amplitude = (o.amplitude[0] + (o.amplitude[1] - o.amplitude[0]) * unit[:, 0]).astype(np.float32)
        phase = (o.phase[0] + (o.phase[1] - o.phase[0]) * unit[:, 1]).astype(np.float32)
        x = (o.x_range[0] + (o.x_range[1] - o.x_range[0]) * unit[:, 2:, None]).astype(np.float32)
        y = amplitude[:, None, None] * np.sin(x - phase[:, None, None])
        k = self.k_shot
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (x[:, :k], y[:, :k], x[:, k:], y[:, k:])]
        return Episode(*tensors, torch.full((count, 1), -1, dtype=torch.int64))


class Sinusoid(Dataset):
    name = "sinusoid"
    task_kind = "regression"
    input_shape = (1,)

    def __init__(self, o: SinusoidOptions):
        self.o = o
        self.content_identity = generated({"dataset": self.name, "options": o.__dict__})

    def num_classes(self, split: str) -> int:
        check_split(split)
        return 1  # a regression task has one output; n_way must be 1

    def min_examples(self, split: str) -> int:
        check_split(split)
        return 2**31 - 1  # points are drawn afresh: no K + Q is too many

    def sampler(self, split: str, n_way: int, k_shot: int, q_query: int, seed: int) -> SinusoidTasks:
        check_episode_shape(n_way, k_shot, q_query)
        if n_way != 1:
            raise DataRequestError(f"sinusoid is a regression dataset: n_way must be 1, got {n_way}")
        self.check_request(split, n_way, k_shot, q_query)
        return SinusoidTasks(self.o, split, k_shot, q_query, seed)

    def statistics(self) -> dict[str, object]:
        return {"dataset": self.name, "task": "regression", "amplitude": list(self.o.amplitude),
                "phase": list(self.o.phase), "x_range": list(self.o.x_range), "splits": list(SPLITS),
                "zero_prediction_mse": round(self.zero_prediction_mse(), 4)}

    def zero_prediction_mse(self) -> float:
        """E[(A sin(x - phi))^2] = E[A^2] / 2 (sin^2 averages 1/2 over the phases and inputs; A uniform on [a, b]:
        E[A^2] = (b^3 - a^3) / (3 (b - a)))."""
        a, b = self.o.amplitude
        return (b ** 3 - a ** 3) / (3 * (b - a)) / 2


# the inner rate of Finn et al. (2017), section 5.1 (alpha = 0.01): the learners' default 0.4 was chosen for images
# and sends sinusoid regression off (fomaml/functional: test MSE in the millions)
# version 2: episodes drawn from a counter-based stream (Philox) a batch at a time; version 1's generator per episode
# (PCG64 from a SeedSequence) drew other tasks, so runs of version 1 are neither reused nor paired with version 2's
@register_dataset("sinusoid", SinusoidOptions, backbone="mlp", learner_defaults={"inner_lr": 0.01}, version=2)
def load_sinusoid(o: SinusoidOptions) -> Sinusoid:
    return Sinusoid(o)
