"""A dataset for executor tests that must act while a cell is mid-training, without waiting on time: Finn et al.'s
sinusoid, whose meta-training holds where it draws its third meta-batch (``meta_batch_size``: the suite's) until the
file ``open`` exists in the folder its option ``gate`` names. The training loop draws small meta-batches ahead
(``bench.run.batches``), so the draw that holds may be an earlier meta-iteration's. It says where it is by files in
that folder: ``reached`` (held; it holds the meta-iteration whose draw held), ``signalled`` (a checkpoint signal has
reached the process, ``bench.run.checkpoint``). Named by import path: ``tests.slurm.gated:GATED``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench.run import checkpoint
from meta_bench.datasets.registry import DatasetEntry
from meta_bench.datasets.sinusoid import Sinusoid, SinusoidOptions

HOLD_AT = 2  # the meta-batch whose draw is held


@dataclass(frozen=True)
class GatedOptions(SinusoidOptions):
    gate: str = ""  # a folder; "" holds nothing
    meta_batch_size: int = 2  # the suite's: where meta-batch HOLD_AT starts


class _Gated:
    def __init__(self, tasks, gate: Path, held: bool, size: int):
        self.tasks, self.gate, self.held, self.size = tasks, gate, held, size

    def episode(self, index):
        return self.tasks.episode(index)

    def batch(self, first, count):
        if self.held and first <= HOLD_AT * self.size < first + count:
            written = self.gate / "reached.tmp"
            written.write_text(str(first // self.size))
            written.replace(self.gate / "reached")  # whole when it appears
            while not (self.gate / "open").exists():
                if checkpoint._Signals.requested:  # noqa: SLF001  (what the test waits for)
                    (self.gate / "signalled").touch()
                time.sleep(0.05)
        return self.tasks.batch(first, count)


class GatedSinusoid(Sinusoid):
    name = "sinusoid"

    def __init__(self, o: GatedOptions):
        super().__init__(SinusoidOptions(o.amplitude, o.phase, o.x_range))
        self.gate, self.size = (Path(o.gate) if o.gate else None), o.meta_batch_size

    def sampler(self, split, n_way, k_shot, q_query, seed):
        tasks = super().sampler(split, n_way, k_shot, q_query, seed)
        return _Gated(tasks, self.gate, split == "train" and self.gate is not None, self.size)


GATED = DatasetEntry(GatedOptions, GatedSinusoid, backbone="mlp", learner_defaults={"inner_lr": 0.01})
