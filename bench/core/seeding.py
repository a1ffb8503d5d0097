"""The one place that seeds random number generators."""
from __future__ import annotations

import contextlib
import random
from typing import Annotated, Any, Iterator

import numpy as np
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



def random_states() -> dict[str, Any]:
    """Every global generator's state: torch on the CPU and every GPU, numpy's, Python's (tensors and plain values,
    so ``torch.load(weights_only=True)`` reads them back)."""
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:]],
            "python": random.getstate()}


def set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


@contextlib.contextmanager
def random_states_kept() -> Iterator[None]:
    """Run a block that may draw from any global generator (timing candidates) and leave every one as it was."""
    states = random_states()
    try:
        yield
    finally:
        set_random_states(states)
