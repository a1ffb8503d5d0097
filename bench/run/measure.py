"""Measurement: the one module that reads clocks and memory counters. Every learner is wrapped the same way.

- Wall-clock: the device is synchronised before every clock read (CUDA and MPS run asynchronously).
- Saved-for-backward bytes: ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd keeps for a
  backward pass; each is counted once (by address and size) while it is alive, and the peak is kept. Deterministic and
  device-independent (it depends on shapes and dtypes alone).
- CUDA: ``torch.cuda.max_memory_allocated``, reset at the start of every step and read at its end, so a phase's
  peak covers its own steps and nothing run between them (validation passes in meta-training).
- Process: peak resident set size (Linux VmHWM), likewise reset at the start of a step (/proc/self/clear_refs where
  allowed) and read at its end, on the warm-up steps and every ``RSS_EVERY``-th step: steps of one phase have one
  shape, and the two /proc calls cost ~0.2 ms, a tenth of a small model's meta-iteration.
"""
from __future__ import annotations

import contextlib
import math
import resource
import statistics
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from bench.core.metrics import (CUDA_PEAK_BYTES, MS_MEDIAN, MS_P90, RSS_PEAK_BYTES, SAVED_BYTES_PEAK, SECONDS_TOTAL,
                           TIMED_STEPS, phase)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class SavedTensorTracker:
    """Live and peak bytes of tensors saved for backward, each counted once while any graph holds it."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._holders: dict[tuple, int] = {}  # (device, address, size) -> number of live packed references

    def _release(self, key: tuple, nbytes: int) -> None:
        self._holders[key] -= 1
        if self._holders[key] == 0:
            del self._holders[key]
            self.live -= nbytes

    def _pack(self, tensor: torch.Tensor):
        box = _Packed(tensor)
        nbytes = storage_span_bytes(tensor)
        if nbytes == 0:  # empty tensors share address 0 and hold nothing
            return box
        key = (str(tensor.device), tensor.data_ptr(), nbytes)
        holders = self._holders.get(key, 0)
        if holders == 0:
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self._holders[key] = holders + 1
        weakref.finalize(box, self._release, key, nbytes)  # the graph dropping the tensor releases its bytes
        return box

    @staticmethod
    def _unpack(box: "_Packed") -> torch.Tensor:
        return box.tensor

    @contextlib.contextmanager
    def track(self) -> Iterator["SavedTensorTracker"]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self


def storage_span_bytes(tensor: torch.Tensor) -> int:
    """The bytes of memory a tensor's elements occupy: a task's slice of the meta-batch counts as the slice, and an
    expanded (stride-0) view as the storage it repeats, not as its logical size."""
    if tensor.numel() == 0:
        return 0
    if tensor.layout != torch.strided:
        return tensor.numel() * tensor.element_size()
    span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride()))
    return span * tensor.element_size()


class _Packed:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


RSS_EVERY = 16


@dataclass
class PhaseMeter:
    """Times repeated steps of one phase (meta-training or evaluation) on one device; memory peaks cover the steps
    alone."""

    device: torch.device
    warmup: int = 0
    times: list[float] = field(default_factory=list)
    saved_bytes_peak: int = 0
    cuda_peak_bytes: int = 0
    rss_peak_bytes: int = 0
    steps: int = 0  # units of work begun
    sampled: int = 0  # steps begun (a step may hold several units)

    @contextlib.contextmanager
    def step(self, units: int = 1) -> Iterator[None]:
        """One step of ``units`` units of work (episodes evaluated at once): timed as ``units`` steps of equal
        time, so the times stay per unit. Warm-up steps (those that begin within the first ``warmup`` units) are not
        timed; they are where saved-for-backward bytes are counted, so the hooks' Python overhead never lands in a
        timed step (the count is the same for every step of a phase)."""
        warming = self.steps < self.warmup
        sample_rss = warming or self.sampled % RSS_EVERY == 0
        self.sampled += 1
        synchronize(self.device)
        if sample_rss:
            _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        if warming:
            tracker = SavedTensorTracker()
            with tracker.track():
                yield
            self.saved_bytes_peak = max(self.saved_bytes_peak, tracker.peak)
        else:
            yield
        synchronize(self.device)
        if not warming:
            self.times.extend([(time.perf_counter() - start) / units] * units)
        if sample_rss:
            self.rss_peak_bytes = max(self.rss_peak_bytes, peak_rss_bytes())
        if self.device.type == "cuda":
            self.cuda_peak_bytes = max(self.cuda_peak_bytes, torch.cuda.max_memory_allocated(self.device))
        self.steps += units

    def summary(self, prefix: str) -> dict[str, float]:
        times_ms = sorted(t * 1000 for t in self.times)
        out = {phase(prefix, MS_MEDIAN): statistics.median(times_ms) if times_ms else math.nan,
               phase(prefix, MS_P90): times_ms[min(len(times_ms) - 1, int(0.9 * len(times_ms)))] if times_ms
               else math.nan,
               phase(prefix, SECONDS_TOTAL): sum(self.times),
               phase(prefix, TIMED_STEPS): float(len(times_ms)),
               phase(prefix, SAVED_BYTES_PEAK): float(self.saved_bytes_peak) if self.warmup else math.nan,
               phase(prefix, RSS_PEAK_BYTES): float(self.rss_peak_bytes)}
        if self.device.type == "cuda":
            out[phase(prefix, CUDA_PEAK_BYTES)] = float(self.cuda_peak_bytes)
        return out


@contextlib.contextmanager
def wall_clock(device: torch.device) -> Iterator[list[float]]:
    """The seconds a block takes, the device synchronised at both ends: the list yielded holds them afterwards."""
    seconds: list[float] = []
    synchronize(device)
    start = time.perf_counter()
    try:
        yield seconds
    finally:
        synchronize(device)
        seconds.append(time.perf_counter() - start)


def time_steps(step: Callable[[], None], iterations: int, device: torch.device, warmup: int = 1) -> PhaseMeter:
    """For benchmarks: ``warmup`` untimed calls of ``step`` (where saved-for-backward bytes are counted), then
    ``iterations`` timed ones."""
    meter = PhaseMeter(device, warmup=warmup)
    for _ in range(iterations + warmup):
        with meter.step():
            step()
    return meter


def saved_bytes_of(fn) -> int:
    """Peak bytes saved for backward while ``fn()`` runs (for benchmarks and tests)."""
    tracker = SavedTensorTracker()
    with tracker.track():
        fn()
    return tracker.peak


def confidence_interval95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the normal 95% interval: 1.96 sample standard deviations over sqrt(n)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, 1.96 * std / math.sqrt(n)
