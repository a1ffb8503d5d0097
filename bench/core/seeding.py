"""The one place that seeds random number generators."""
from __future__ import annotations

import contextlib
from typing import Annotated, Iterator

import torch

from bench.core.config import Within

# torch.manual_seed takes 0 .. 2**64-1 (negatives wrap around), numpy's SeedSequence any non-negative integer, but
# numpy's legacy RandomState, which Optuna's samplers seed, only 0 .. 2**32-1: the range every generator accepts
SEED_BOUND = Within(0, 2**32 - 1, "a seed must suit every random generator: torch, numpy and Optuna's samplers")
Seed = Annotated[int, SEED_BOUND]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under ``seed`` without disturbing the global generators outside it."""
    if not SEED_BOUND.low <= seed <= SEED_BOUND.high:
        raise ValueError(f"seed {seed} is out of range [{SEED_BOUND.low}, {SEED_BOUND.high}]: {SEED_BOUND.why}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

