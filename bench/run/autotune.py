"""Execution chosen by measurement: where a learner's config leaves its execution open (``task_batching: auto``),
every exact candidate it offers (``execution_candidates``: loop, vmap, vmap in chunks, bmm), on the CPU under every
intra-op thread count from 1 to the cell's budget, is raced on the cell's own first meta-batch (every choice is timed
under the most threads, fewer threads only for the choices near the fastest there, and only the candidates near the
fastest are timed again), and the fastest runs the cell. An explicit choice is never overridden: a learner with
nothing open is not tuned, and its threads stay as they are.

Why threads are a candidate: for small models oversubscription costs more than the work (the sinusoid MLP ran
several times slower with 2 intra-op threads than with 1 while another job used the other core), and for Conv-4
the second thread pays; only a measurement on the cell's shapes, on this machine, now, tells.

A candidate that raises (out of memory; vmap over batch norm that keeps running statistics: "Batch norm got a
batched tensor") is no candidate: it is left out with its reason (``ran.autotune_failed``); only where every one
fails does the cell fail, naming each reason. Measuring leaves the learner as it found it: its parameters, every
buffer (batch norm's running statistics and counts), its attributes (the execution chosen) and the thread count are
put back on every exit, gradients are cleared and the random streams forked.

Through meta-training (``Autotuner``) the execution is decided again where the learner's ``execution_phase``
changes (MAML++'s first-order epochs turning second order, the multi-step loss ending: more graph, so what fitted
may not), and a step that runs out of device memory is retried, from the state it started in, on the next fastest
candidate that ran (``ran.autotune`` ``fallback``; every switch in ``ran.autotune_history``).

The decision is cached in ``results/autotune.json`` (``METABENCH_AUTOTUNE`` overrides the path) under everything it
depends on: the learner, its whole config, its execution phase, the code identity, the batch's shapes, the model's
structure (its modules as ``repr`` prints them) with its parameters' and buffers' names and shapes, dtype, torch
version, thread budget and the machine (``bench.core.hardware.machine_facts``: cores, affinity, cgroup CPU quota;
on CUDA the device's memory, multiprocessors and UUID, so a MIG slice is its own machine); a suite decides once per
shape. The cache holds choices, never results: a stale or damaged entry can cost speed, not correctness (every
candidate computes the same meta-gradient, tested), and a damaged file is set aside and decided afresh.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.core.hardware import machine_facts
from bench.core.paths import AUTOTUNE_CACHE
from bench.core.seeding import random_states_kept
from bench.run.measure import time_steps
from bench.run.problems import meta_iteration
from meta_bench.algorithms import MetaLearner, StepResult
from meta_bench.datasets import Episode

TIMED_ITERATIONS = 3  # a candidate in the race to the end: the median of these
RACE_MARGIN = 1.2  # slower than this times the fastest on a first time: a choice is not timed under fewer threads,
# a candidate is not timed again
MEASURED, CACHED, EXPLICIT, FALLBACK = "measured", "cached", "explicit", "fallback"
Candidate = tuple[dict[str, str], int]  # an execution choice and its intra-op threads


@dataclass(frozen=True)
class Decision:
    """What runs the cell: the learner's execution choice (empty: nothing was open), the intra-op threads, how it
    was decided, every timed candidate's milliseconds per meta-iteration (the race's median, or the one time of a
    candidate left behind; fewer threads of a choice far behind are never timed; empty unless measured here), the
    candidates that could not run with their reasons, and those that ran, fastest first (the chosen one first; the
    next takes over where it runs out of memory)."""

    choice: dict[str, str]
    threads: int
    how: str
    times_ms: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    ranking: tuple[Candidate, ...] = ()

    def tags(self) -> dict[str, str]:
        """For the cell's ``ran.*`` tags, beside the learner's own ``execution()``."""
        tags = {"threads": str(self.threads), "autotune": self.how}
        if self.times_ms:
            tags["autotune_ms"] = json.dumps({k: round(v, 3) for k, v in self.times_ms.items()})
        if self.failed:
            tags["autotune_failed"] = json.dumps(self.failed, sort_keys=True)
        return tags


def label(choice: dict[str, str], threads: int) -> str:
    """A candidate as a person reads it: ``vmap/25 t1`` (mode / tasks per pass, intra-op threads)."""
    mode = choice["task_batching"]
    return f"{mode}{'' if mode == 'loop' else '/' + choice['vmap_chunk']} t{threads}"


def cache_path() -> Path:
    return Path(os.environ.get("METABENCH_AUTOTUNE", AUTOTUNE_CACHE))


def cache_key(learner: MetaLearner, name: str, code: str, batch: Episode, device: torch.device,
              dtype: torch.dtype, budget: int, phase: str = "") -> str:
    model = learner.model
    facts = {"learner": name, "config": repr(learner.config), "phase": phase, "code": code,
             "batch": [list(t.shape) for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y)],
             "model": [[n, list(p.shape)] for n, p in model.named_parameters()],
             "buffers": [[n, list(b.shape)] for n, b in model.named_buffers()],
             "modules": repr(model),  # batch norm with or without running statistics, pooling, layer types
             "machine": machine_facts(device), "dtype": str(dtype), "torch": torch.__version__, "threads": budget}
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
           budget: int | None = None, cache: Path | None = None, iteration: int = 0) -> Decision:
    """Choose and apply (``use_execution``, ``torch.set_num_threads``) the fastest exact execution of ``batch``
    for ``learner`` with at most ``budget`` intra-op threads (default: the current count). ``iteration``: the
    meta-iteration the learner stands at (its ``start_iteration`` called): measured as it computes there, and its
    ``execution_phase`` is part of the cache key."""
    budget = budget or torch.get_num_threads()
    candidates = learner.execution_candidates(len(batch), device)
    if not candidates:
        return Decision({}, torch.get_num_threads(), EXPLICIT)
    thread_counts = list(range(1, budget + 1)) if device.type == "cpu" else [torch.get_num_threads()]
    cache = cache or cache_path()
    key = cache_key(learner, name, code, batch, device, batch.query_x.dtype, budget,
                    learner.execution_phase(iteration))
    entry = _read(cache).get(key)
    ranking = _cached_ranking(entry, candidates, thread_counts)
    if ranking:
        failed = entry.get("failed") if isinstance(entry.get("failed"), dict) else {}
        return _apply(learner, Decision(*ranking[0], CACHED, failed=failed, ranking=ranking))
    times, failed = _measure(learner, batch, device, candidates, thread_counts)
    if not times:
        raise RuntimeError("no execution candidate could run: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    ranking = tuple(candidate for candidate, _ in sorted(times, key=lambda timed: timed[1]))
    by_label = {label(*candidate): ms for candidate, ms in times}
    _write(cache, key, {"ranking": [list(c) for c in ranking], "times_ms": by_label, "failed": failed,
                        "learner": name})
    return _apply(learner, Decision(*ranking[0], MEASURED, by_label, failed, ranking))


def _cached_ranking(entry: object, candidates: list[dict[str, str]], thread_counts: list[int]
                    ) -> tuple[Candidate, ...]:
    """A cache entry's ranking where all of it is still on offer; empty (decide afresh) where anything is off."""
    ranking = entry.get("ranking") if isinstance(entry, dict) else None
    if not isinstance(ranking, list) or not ranking:
        return ()
    if not all(isinstance(r, list) and len(r) == 2 and r[0] in candidates and r[1] in thread_counts for r in ranking):
        return ()
    return tuple((dict(choice), threads) for choice, threads in ranking)


def _measure(learner: MetaLearner, batch: Episode, device: torch.device, candidates: list[dict[str, str]],
             thread_counts: list[int]) -> tuple[list[tuple[Candidate, float]], dict[str, str]]:
    """Every candidate that ran with its milliseconds per meta-iteration, and the reason of each that could not.
    A race, so that tuning a cell of slow steps (Conv-4: a few hundred milliseconds each) costs a few steps, not four
    per candidate. Each execution choice is timed once under the most threads; the fewer thread counts are timed
    once for the choices within ``RACE_MARGIN`` of the fastest of those; then only the candidates within
    ``RACE_MARGIN`` of the fastest first time are timed again, to the median of ``TIMED_ITERATIONS``; the others
    keep their one time. Each choice warms up once (an untimed run before its first time, under the most threads):
    a choice's first run pays what it builds once (kernels, cuDNN plans, oneDNN primitives), which a margin this
    narrow must not mistake for its speed. A choice that cannot run under the most threads is not tried under fewer
    (what stops it, out of memory or an operator vmap cannot batch, does not depend on threads). (Measured on glyphs
    Conv-4 5-way 1-shot, 4 tasks, 2 threads: ``docs/measurements/autotune_race.txt``.)"""
    by_label = {label(choice, count): (choice, count) for choice in candidates for count in thread_counts}
    samples: dict[str, list[float]] = {}  # by label, in the order first timed
    failed: dict[str, str] = {}
    threads, saved = torch.get_num_threads(), _Saved(learner)

    def sample(name: str, warm: bool) -> None:
        choice, count = by_label[name]
        torch.set_num_threads(count)
        try:
            learner.use_execution(choice)
            samples.setdefault(name, []).append(_sample_ms(learner, batch, device, warm))
        except Exception as error:  # noqa: BLE001  (cannot run: no candidate; the reason is logged)
            samples.pop(name, None)
            failed[name] = _reason(error)

    def near_the_fastest(names: list[str]) -> list[str]:
        firsts = {name: samples[name][0] for name in names if name in samples}
        fastest = min(firsts.values(), default=0.0)
        return [name for name, first in firsts.items() if first <= RACE_MARGIN * fastest]

    most, fewer = thread_counts[-1], thread_counts[-2::-1]
    try:
        with random_states_kept():  # measuring draws nothing the cell would draw: torch, numpy, Python
            for choice in candidates:
                sample(label(choice, most), warm=True)
            for name in near_the_fastest([label(choice, most) for choice in candidates]):
                for count in fewer:
                    sample(label(by_label[name][0], count), warm=False)
            for name in near_the_fastest(list(samples)):
                for _ in range(TIMED_ITERATIONS - 1):
                    if name in samples:  # not failed since
                        sample(name, warm=False)
    finally:
        torch.set_num_threads(threads)
        saved.restore()
        _clear_gradients(learner)
    return [(by_label[name], statistics.median(times)) for name, times in samples.items()], failed


def _sample_ms(learner: MetaLearner, batch: Episode, device: torch.device, warm: bool) -> float:
    """Milliseconds of one meta-iteration of ``batch`` as the learner now runs, after one untimed one where
    ``warm`` (a choice's first run pays what it builds once)."""
    return time_steps(meta_iteration(learner, batch), 1, device, warmup=int(warm)).times[0] * 1000


def _reason(error: BaseException) -> str:
    """An exception as one short line for a tag."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0][:200]}" if message else type(error).__name__


def _clear_gradients(learner: MetaLearner) -> None:
    """What a step left in ``.grad`` (timing, or a step that ran out of memory) must not add to the next."""
    for parameter in learner.meta_parameters():
        parameter.grad = None


def _apply(learner: MetaLearner, decision: Decision) -> Decision:
    learner.use_execution(decision.choice)
    torch.set_num_threads(decision.threads)
    return decision


def _decision(fields: dict) -> Decision:
    return Decision(**{**fields, "ranking": tuple((dict(choice), threads) for choice, threads in fields["ranking"])})


class _Saved:
    """A learner's state, to put back after running it outside training (timing candidates, a step that ran out of
    memory): its ``state_dict`` (parameters, learned rates, persistent buffers), every buffer of its model (batch
    norm's running statistics and batch counts; non-persistent ones too) and its attributes (the execution chosen,
    the iteration)."""

    def __init__(self, learner: MetaLearner):
        self.learner = learner
        self.attributes = dict(vars(learner))
        self.state = {k: v.detach().clone() for k, v in learner.state_dict().items()}
        self.buffers = {n: b.detach().clone() for n, b in learner.model.named_buffers()}

    def restore(self) -> None:
        vars(self.learner).clear()
        vars(self.learner).update(self.attributes)
        self.learner.load_state_dict(self.state)  # in place: the outer optimiser keeps the same tensors
        with torch.no_grad():
            for name, buffer in self.learner.model.named_buffers():
                buffer.copy_(self.buffers[name])


class _Buffers:
    """What one meta-gradient step may change (the contract: buffers, never the weights), to put back before the
    step runs again: a copy of the model's buffers alone, taken before every step where a fallback exists, so it
    must stay small (batch norm's statistics, not the parameters)."""

    def __init__(self, learner: MetaLearner):
        self.learner = learner
        self.buffers = {n: b.detach().clone() for n, b in learner.model.named_buffers()}

    def restore(self) -> None:
        with torch.no_grad():
            for name, buffer in self.learner.model.named_buffers():
                buffer.copy_(self.buffers[name])


class Autotuner:
    """A cell's execution through meta-training: decided before the first meta-iteration, again where the
    learner's ``execution_phase`` changes, and handed to the next fastest candidate that ran where a step runs out
    of device memory. The runner calls ``before`` after ``start_iteration`` and outside the clock, and takes the
    step's meta-gradient from ``meta_gradient``."""

    def __init__(self, learner: MetaLearner, name: str, code: str, batch: Episode, device: torch.device):
        self.learner, self.name, self.code, self.device = learner, name, code, device
        self.budget = torch.get_num_threads()  # the cell's: a decision's own thread count never narrows the next
        self.iteration, self.phase = 0, learner.execution_phase(0)  # a new learner stands at iteration 0
        self.decision = decide(learner, name, code, batch, device, self.budget)
        self.history = [(self.iteration, self.phase, self.decision)]
        self.saved: _Buffers | None = None

    def before(self, iteration: int, batch: Episode) -> None:
        """Ready meta-iteration ``iteration`` (the learner's ``start_iteration`` called): a new phase is decided
        again, measured as the learner now computes."""
        self.iteration = iteration
        phase = self.learner.execution_phase(iteration)
        if phase != self.phase and self.decision.how != EXPLICIT:
            self.phase, self.decision = phase, decide(self.learner, self.name, self.code, batch, self.device,
                                                      self.budget, iteration=iteration)
            self.history.append((iteration, phase, self.decision))
        # a retried step must start from this one's state; a step changes buffers alone (the contract: not the
        # weights), so without buffers there is nothing to keep
        keep = self._fallback() is not None and any(True for _ in self.learner.model.buffers())
        self.saved = _Buffers(self.learner) if keep else None

    def meta_gradient(self, batch: Episode) -> StepResult:
        """The learner's meta-gradient of ``batch``; out of device memory, the step again on the next candidate."""
        while True:
            try:
                return self.learner.meta_gradient(batch)
            except torch.cuda.OutOfMemoryError as error:
                fallback = self._fallback()
                if fallback is None:
                    raise
                if self.saved is not None:
                    self.saved.restore()
                _clear_gradients(self.learner)
                out = label(self.decision.choice, self.decision.threads)
                failed = {**self.decision.failed, out: f"{_reason(error)} (meta-iteration {self.iteration})"}
                rest = tuple(c for c in self.decision.ranking if c[0] != self.decision.choice)
                self.decision = _apply(self.learner, Decision(*fallback, FALLBACK, self.decision.times_ms, failed,
                                                              rest))
                self.history.append((self.iteration, self.phase, self.decision))

    def state(self) -> dict:
        """What a checkpoint keeps: the phase, the execution in force and every switch so far (plain values)."""
        return {"phase": self.phase, "decision": dataclasses.asdict(self.decision),
                "history": [(iteration, phase, dataclasses.asdict(d)) for iteration, phase, d in self.history]}

    def resume(self, state: dict) -> None:
        """Run on as the checkpointed cell ran: its execution, not one decided afresh (float32 sums depend on it)."""
        self.phase = state["phase"]
        self.history = [(iteration, phase, _decision(d)) for iteration, phase, d in state["history"]]
        decision = _decision(state["decision"])
        self.decision = _apply(self.learner, decision) if decision.choice else decision  # nothing open: as it is

    def _fallback(self) -> Candidate | None:
        """The fastest candidate that ran with another choice than the current (threads do not change memory)."""
        return next((c for c in self.decision.ranking if c[0] != self.decision.choice), None)

    def tags(self) -> dict[str, str]:
        """The execution in force at the end, and every switch where there was one."""
        tags = self.decision.tags()
        if len(self.history) > 1:
            tags["autotune_history"] = json.dumps([[iteration, phase, label(d.choice, d.threads), d.how]
                                                   for iteration, phase, d in self.history])
        return tags
