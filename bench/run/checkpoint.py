"""A cell's whole training state, saved as it trains, so that a cell claimed again after its owner was lost (a
``kill -9``, a lost Ray worker, a Slurm job requeued after preemption or a time limit) resumes mid-training.

What is saved: the next meta-iteration, the learner's ``state_dict`` (meta-parameters, learned inner rates, buffers),
the outer optimiser's state, the random states (torch on the CPU and every GPU, numpy, Python), the execution in force
(``autotune.Autotuner``), the curve window, the validation scores and curve points emitted so far, and the phase
meters (times and memory peaks of the iterations timed so far). The episode stream needs no state: episode ``i`` is
drawn from its own seed. Resuming from a checkpoint gives the meta-parameters and test scores of a cell that never
stopped (bit-exact in float64 on the CPU; in float32 where the execution choice is the same).

A checkpoint is written every ``training.checkpoint_every`` seconds (between meta-iterations, never inside the timed
step) and when SIGUSR1 or SIGTERM arrives (what Slurm sends before a time limit or preemption, with ``--signal``):
SIGUSR1 saves and trains on, SIGTERM saves and stops the cell as Ctrl-C would (``Stopped``; a Slurm job's SIGUSR2,
``stop_on``, saves and stops so that the job is requeued). It is one file per training (its
training hash, code identity and data identity), replaced atomically, under ``results/checkpoints``
(``METABENCH_CHECKPOINTS`` overrides), and removed once the cell is done.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from bench.core.paths import CHECKPOINTS
from bench.spec.suite import Cell

FORMAT = 1  # bumped when the saved fields change: an older checkpoint is set aside, the cell starts afresh


def folder() -> Path:
    return Path(os.environ.get("METABENCH_CHECKPOINTS", CHECKPOINTS))


def path_for(cell: Cell, code: str, data: str) -> Path:
    """The one checkpoint of a training: cells that train the same model under the same code on the same data."""
    key = hashlib.sha256(f"{cell.training_hash}|{code}|{data}".encode()).hexdigest()[:24]
    return folder() / f"{cell.suite}-{key}.pt"


def meter_state(meter) -> dict[str, Any]:
    return {f.name: getattr(meter, f.name) for f in dataclasses.fields(meter) if f.name != "device"}


def set_meter_state(meter, state: dict[str, Any]) -> None:
    for name, value in state.items():
        setattr(meter, name, list(value) if isinstance(value, list) else value)


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` whole or not at all: a temporary file in the same folder, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save({"format": FORMAT, **state}, temporary)
    os.replace(temporary, path)


def load(path: Path) -> dict[str, Any] | None:
    """The saved state, or None where there is none; a damaged or older-format file is set aside (renamed, never
    deleted) with a warning, and the cell starts afresh."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        if state.get("format") == FORMAT:
            return state
        why = f"format {state.get('format')}, this version reads {FORMAT}"
    except Exception as error:  # noqa: BLE001  (a truncated or foreign file: any unpickling error)
        why = f"{type(error).__name__}: {error}"
    aside = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
    os.replace(path, aside)
    warnings.warn(f"checkpoint {path} could not be resumed from ({why}); set aside as {aside.name}, the cell "
                  f"starts from meta-iteration 0", stacklevel=2)
    return None


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class Stopped(KeyboardInterrupt):
    """A signal asked the cell to save its training state and stop, and it is saved: stopped as Ctrl-C stops a cell,
    unless the process that asked resumes it elsewhere (a Slurm job requeued)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Schedule:
    """When to save: every ``every`` seconds (0: after every meta-iteration), and at once when a signal asked."""

    def __init__(self, every: float):
        self.every = every
        self.last = time.monotonic()

    def due(self) -> bool:
        return _Signals.requested or time.monotonic() - self.last >= self.every

    def saved(self) -> None:
        self.last = time.monotonic()
        _Signals.requested = False
        if _Signals.stop:
            signum, _Signals.stop = _Signals.stop, 0
            raise Stopped(signum)  # saved: now stopped (under Ctrl-C's rules, unless the asker resumes it)


class _Signals:
    requested = False  # a signal asked for a checkpoint: saved at the next meta-iteration boundary
    stop = 0  # the signal that asked to stop once saved (0: none)
    stopping: tuple[int, ...] = (signal.SIGTERM,)


def _save_now(signum, frame) -> None:
    _Signals.requested = True
    if signum in _Signals.stopping:
        _Signals.stop = _Signals.stop or signum


@contextlib.contextmanager
def on_signals() -> Iterator[None]:
    """SIGUSR1 and SIGTERM ask for a checkpoint while a cell trains. Only in the main thread, and only where nobody
    else handles the signal (a Ray worker's SIGTERM, submitit's SIGUSR1 are theirs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    for signum in (signal.SIGUSR1, signal.SIGTERM):
        if signal.getsignal(signum) is signal.SIG_DFL:
            installed[signum] = signal.signal(signum, _save_now)
    try:
        yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)
        _Signals.requested, _Signals.stop = False, 0


@contextlib.contextmanager
def stop_on(signum: int) -> Iterator[None]:
    """While a cell runs in the block, ``signum`` saves its training state at the next meta-iteration boundary and
    then raises ``Stopped`` (a Slurm job told of its time limit or preemption: it is requeued and resumes). Whoever
    handled ``signum`` before gets it back after the block."""
    previous = signal.signal(signum, _save_now)
    _Signals.stopping = (signal.SIGTERM, signum)
    try:
        yield
    finally:
        signal.signal(signum, previous)
        _Signals.stopping = (signal.SIGTERM,)
