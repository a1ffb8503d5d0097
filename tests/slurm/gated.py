"""A dataset for executor tests that must act while a cell is mid-training, without waiting on time: Finn et al.'s
sinusoid, whose meta-training holds at its third meta-batch until the file ``open`` exists in the folder its option
``gate`` names. It says where it is by files in that folder: ``reached`` (held), ``signalled`` (a checkpoint signal
has reached the process, ``bench.run.checkpoint``). Named by import path: ``tests.slurm.gated:GATED``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench.run import checkpoint
from meta_bench.datasets.registry import DatasetEntry
from meta_bench.datasets.sinusoid import Sinusoid, SinusoidOptions

HOLD_AT = 2  # the meta-iteration held


@dataclass(frozen=True)
class GatedOptions(SinusoidOptions):
    gate: str = ""  # a folder; "" holds nothing


class _Gated:
    def __init__(self, tasks, gate: Path, held: bool):
        self.tasks, self.gate, self.held = tasks, gate, held

    def episode(self, index):
        return self.tasks.episode(index)

    def batch(self, first, count):
        if self.held and first == HOLD_AT * count:
            (self.gate / "reached").touch()
            while not (self.gate / "open").exists():
                if checkpoint._Signals.requested:  # noqa: SLF001  (what the test waits for)
                    (self.gate / "signalled").touch()
                time.sleep(0.05)
        return self.tasks.batch(first, count)


class GatedSinusoid(Sinusoid):
    name = "sinusoid"

    def __init__(self, o: GatedOptions):
        super().__init__(SinusoidOptions(o.amplitude, o.phase, o.x_range))
        self.gate = Path(o.gate) if o.gate else None

    def sampler(self, split, n_way, k_shot, q_query, seed):
        tasks = super().sampler(split, n_way, k_shot, q_query, seed)
        return _Gated(tasks, self.gate, split == "train" and self.gate is not None)


GATED = DatasetEntry(GatedOptions, GatedSinusoid, backbone="mlp", learner_defaults={"inner_lr": 0.01})
