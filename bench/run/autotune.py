"""Execution chosen by measurement: where a learner's config leaves its execution open (``task_batching: auto``),
every exact candidate it offers (``execution_candidates``: loop, vmap, vmap in chunks, bmm), on the CPU under every
intra-op thread count from 1 to the cell's budget, is timed on the cell's own first meta-batch, and the fastest
runs the cell. An explicit choice is never overridden: a learner with nothing open is not tuned, and its threads
stay as they are.

Why threads are a candidate: for small models oversubscription costs more than the work (the sinusoid MLP ran
several times slower with 2 intra-op threads than with 1 while another job used the other core), and for Conv-4
the second thread pays; only a measurement on the cell's shapes, on this machine, now, tells.

The decision is cached in ``results/autotune.json`` (``METABENCH_AUTOTUNE`` overrides the path) under everything it
depends on: the learner, its whole config, the code identity, the batch's and the model's shapes, device, dtype,
torch version and thread budget; a suite decides once per shape. The cache holds choices, never results: a stale
or damaged entry can cost speed, not correctness (every candidate computes the same meta-gradient, tested), and a
damaged file is set aside and decided afresh. Tuning steps take no optimiser step and leave no gradient behind.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core.hardware import device_description
from bench.core.paths import AUTOTUNE_CACHE
from bench.run.measure import time_steps
from bench.run.problems import meta_iteration
from meta_bench.algorithms import MetaLearner
from meta_bench.datasets import Episode

TIMED_ITERATIONS = 3  # each candidate: one untimed warm-up, then the median of these
MEASURED, CACHED, EXPLICIT = "measured", "cached", "explicit"


@dataclass(frozen=True)
class Decision:
    """What runs the cell: the learner's execution choice (empty: nothing was open), the intra-op threads, how it
    was decided and every candidate's median milliseconds per meta-iteration (empty unless measured here)."""

    choice: dict[str, str]
    threads: int
    how: str
    times_ms: dict[str, float] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        """For the cell's ``ran.*`` tags, beside the learner's own ``execution()``."""
        tags = {"threads": str(self.threads), "autotune": self.how}
        if self.times_ms:
            tags["autotune_ms"] = json.dumps({k: round(v, 3) for k, v in self.times_ms.items()})
        return tags


def label(choice: dict[str, str], threads: int) -> str:
    """A candidate as a person reads it: ``vmap/25 t1`` (mode / tasks per pass, intra-op threads)."""
    mode = choice["task_batching"]
    return f"{mode}{'' if mode == 'loop' else '/' + choice['vmap_chunk']} t{threads}"


def cache_path() -> Path:
    return Path(os.environ.get("METABENCH_AUTOTUNE", AUTOTUNE_CACHE))


def cache_key(learner: MetaLearner, name: str, code: str, batch: Episode, device: torch.device,
              dtype: torch.dtype, budget: int) -> str:
    facts = {"learner": name, "config": repr(learner.config), "code": code,
             "batch": [list(t.shape) for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y)],
             "model": [[n, list(p.shape)] for n, p in learner.model.named_parameters()],
             "device": f"{device.type}:{device_description(device)}", "dtype": str(dtype), "torch": torch.__version__,
             "threads": budget}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:24]


def _read(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: decided afresh, the file rewritten whole
        return {}
    return entries if isinstance(entries, dict) else {}


def _write(path: Path, key: str, entry: dict) -> None:
    """Merge one entry into the cache, replacing the file atomically (a concurrent writer may win: a lost entry is
    decided again, never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = _read(path)
    entries[key] = entry
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(entries, out, indent=1, sort_keys=True)
    os.replace(temporary, path)


def decide(learner: MetaLearner, name: str, code: str, batch: Episode, device: torch.device,
           budget: int | None = None, cache: Path | None = None) -> Decision:
    """Choose and apply (``use_execution``, ``torch.set_num_threads``) the fastest exact execution of ``batch``
    for ``learner`` with at most ``budget`` intra-op threads (default: the current count)."""
    budget = budget or torch.get_num_threads()
    candidates = learner.execution_candidates(len(batch), device)
    if not candidates:
        return Decision({}, torch.get_num_threads(), EXPLICIT)
    thread_counts = list(range(1, budget + 1)) if device.type == "cpu" else [torch.get_num_threads()]
    cache = cache or cache_path()
    key = cache_key(learner, name, code, batch, device, batch.query_x.dtype, budget)
    entry = _read(cache).get(key)
    if isinstance(entry, dict) and entry.get("choice") in candidates and entry.get("threads") in thread_counts:
        return _apply(learner, Decision(entry["choice"], entry["threads"], CACHED))
    times: dict[str, float] = {}
    by_label: dict[str, tuple[dict[str, str], int]] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for choice in candidates:
                learner.use_execution(choice)
                by_label[label(choice, threads)] = (choice, threads)
                times[label(choice, threads)] = _median_ms(learner, batch, device)
    for parameter in learner.meta_parameters():
        parameter.grad = None
    best = min(times, key=times.get)
    if not math.isfinite(times[best]):
        raise RuntimeError(f"no execution candidate could run: {times}")
    choice, threads = by_label[best]
    _write(cache, key, {"choice": choice, "threads": threads, "times_ms": times, "learner": name})
    return _apply(learner, Decision(choice, threads, MEASURED, times))


def _median_ms(learner: MetaLearner, batch: Episode, device: torch.device) -> float:
    try:
        return statistics.median(time_steps(meta_iteration(learner, batch), TIMED_ITERATIONS, device).times) * 1000
    except torch.cuda.OutOfMemoryError:  # a candidate that does not fit is not a candidate
        torch.cuda.empty_cache()
        return float("inf")


def _apply(learner: MetaLearner, decision: Decision) -> Decision:
    learner.use_execution(decision.choice)
    torch.set_num_threads(decision.threads)
    return decision
