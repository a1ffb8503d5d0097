"""Meta-batches drawn ahead. Where one meta-batch is small (sinusoid: 25 tasks of 20 points, 8 KB), drawing it costs
more than its numbers (a generator, a dozen numpy operations, five tensors, a device copy), so the training loop draws
many consecutive meta-batches in one call and hands out slices: the same episodes, since a task source addresses every
episode by its index (``TaskSource.batch(first, count)`` is ``count`` consecutive episodes, however it is cut). A
meta-batch of images (``AHEAD_BYTES`` or more) is drawn alone, as before.
"""
from __future__ import annotations

import dataclasses

import torch

from meta_bench.datasets import Episode, TaskSource

AHEAD_BYTES = 1 << 20  # a block of meta-batches drawn at once holds at most about this much


def _bytes(episode: Episode) -> int:
    return sum(getattr(episode, f.name).nbytes for f in dataclasses.fields(episode))


class MetaBatches:
    """Meta-batch ``iteration`` of ``iterations`` (episodes ``iteration * size`` onwards) of ``source``, on
    ``device`` in ``dtype``, drawn a block at a time; a block never reaches past the last meta-iteration."""

    def __init__(self, source: TaskSource, size: int, iterations: int, device: torch.device, dtype: torch.dtype):
        self.source, self.size, self.iterations, self.device, self.dtype = source, size, iterations, device, dtype
        self.per_block = 0  # meta-batches per block: decided from the first one's size
        self.first, self.block = 0, None  # the block's first meta-iteration, and the block

    def __call__(self, iteration: int) -> Episode:
        if self.block is None or not self.first <= iteration < self.first + len(self.block) // self.size:
            count = 1 if self.per_block == 0 else min(self.per_block, self.iterations - iteration)
            self.first = iteration
            self.block = self.source.batch(iteration * self.size, count * self.size).to(self.device, self.dtype)
            if self.per_block == 0:
                self.per_block = max(1, AHEAD_BYTES // max(1, _bytes(self.block)))
        offset = (iteration - self.first) * self.size
        if offset == 0 and len(self.block) == self.size:
            return self.block
        return self.block.tasks(offset, offset + self.size)
