"""The one episode type every dataset produces and every learner consumes."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass(frozen=True)
class Episode:
    """An N-way K-shot task; with a leading task dimension it is a batch of B tasks.

    Labels are 0..N-1 within the task (regression tasks carry float targets instead);
    ``classes[i]`` is the global id of the class label ``i`` stands for, numbered 0..C-1 over the C classes
    of the episode's split, which the fine-tuning baseline trains on (-1 where a dataset has no classes).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor

    @property
    def is_batch(self) -> bool:
        return self.classes.dim() == 2

    def __len__(self) -> int:
        if not self.is_batch:
            raise TypeError("a single episode has no length; stack episodes into a batch first")
        return self.classes.shape[0]

    def task(self, index: int) -> "Episode":
        return Episode(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def tasks(self, start: int, stop: int) -> "Episode":
        return Episode(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Episode":
        """Move to ``device``; floating inputs (and float targets) also take ``dtype``."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype, non_blocking=True)
            return t.to(device=device, non_blocking=True)

        return Episode(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    @staticmethod
    def stack(episodes: list["Episode"]) -> "Episode":
        if not episodes:
            raise ValueError("cannot stack an empty list of episodes")
        return Episode(**{f.name: torch.stack([getattr(e, f.name) for e in episodes]) for f in fields(Episode)})
