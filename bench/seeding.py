"""The one place that seeds random number generators."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under ``seed`` without disturbing the global generators outside it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield

