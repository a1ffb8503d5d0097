"""Running one cell: the harness owns the data, the model's initial weights, the outer optimiser and the clock;
the learner fills its slot (``meta_gradient``, ``predict``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from bench.core import interrupts
from bench.core import metrics as m
from bench.core.seeding import random_states, set_random_states
from bench.core.metrics import (CUDA_PEAK_BYTES, MS_MEDIAN, MS_P90, RSS_PEAK_BYTES, SAVED_BYTES_PEAK, SECONDS_TOTAL,
                                TIMED_STEPS, phase)
from bench.run import autotune, checkpoint
from bench.run.batches import MetaBatches
from bench.run.evaluation import evaluate
from bench.run.factory import build_learner, build_optimizer, dtype_of
from bench.run.measure import PhaseMeter, wall_clock
from bench.run.phases import PhaseClock
from bench.run.test_time import score_cell
from bench.spec.suite import Cell
from bench.store.provenance import code_identity
from meta_bench.algorithms import MetaLearner
from meta_bench.datasets import TaskSource, load_dataset
from meta_bench.datasets.content import of_train_and_test

Curve = Callable[[int, dict[str, float]], None]  # (meta-iteration, values by metric name)


TRAIN, VALIDATION = "train", "validation"  # the two kinds of curve point a cell emits
CURVE_POINTS = 1000  # at most this many points per training curve (window means beyond): logging stays bounded


class NonFiniteLossError(FloatingPointError):
    pass


class CurveWindow:
    """Training curves at a bounded rate: each point is the mean of ``stride`` meta-iterations' values, logged at
    the window's last iteration; a cell of at most ``CURVE_POINTS`` iterations logs every one as it is."""

    def __init__(self, iterations: int):
        self.stride = max(1, math.ceil(iterations / CURVE_POINTS))
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, iteration: int, names: list[str], values: list[float], last: bool) -> dict[str, float] | None:
        """The window's means when ``iteration`` closes it, else None."""
        for name, value in zip(names, values):
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1
        if (iteration + 1) % self.stride and not last:
            return None
        means = {name: total / self.count for name, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


@dataclass(frozen=True)
class Trained:
    """A finished run's meta-training, for a cell that differs from it only in how it is tested: the trained
    meta-parameters and the training metrics, carried over (validation is not: it follows the test-time settings),
    and where they came from: the tags ``tags.TRAINED_BY`` and ``tags.TRAINED_AS`` of the run tested on them."""

    provenance: dict[str, str]
    state: dict[str, torch.Tensor]
    metrics: dict[str, float]


def training_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The summary metrics of meta-training (the phase's clock and memory, the final loss): what a cell tested on
    another run's training carries over. Not the curves (``train_loss`` and the learner's own): their last values
    are points of another run's curve."""
    summary = {phase("train", suffix) for suffix in (MS_MEDIAN, MS_P90, SECONDS_TOTAL, TIMED_STEPS, SAVED_BYTES_PEAK,
                                                      RSS_PEAK_BYTES, CUDA_PEAK_BYTES)}
    return {k: v for k, v in metrics.items() if k in summary or k == m.FINAL_TRAIN_LOSS}


@dataclass
class CellResult:
    metrics: dict[str, float]
    test_scores: list[float]  # per test episode, by episode index
    score_name: str  # "accuracy" or "mse"
    state_dict: dict[str, torch.Tensor]
    execution: dict[str, str]  # how the cell actually ran (task_batching resolved from "auto", threads, autotuning)
    condition_scores: list[tuple] = field(default_factory=list)  # bench.run.test_time.COLUMNS rows (may be empty)


def step_values(result) -> tuple[list[str], torch.Tensor]:
    """The step's loss and the learner's metrics as names and one flat tensor, so one device read gets them all."""
    names, parts = [m.TRAIN_LOSS], [result.loss.reshape(1)]
    for key, value in result.metrics.items():
        flat = value.detach().reshape(-1)
        names.extend(m.learner_curves(key, flat.numel()))
        parts.append(flat.to(result.loss.dtype))
    return names, torch.cat(parts)


def run_cell(cell: Cell, on_train: Curve | None = None, on_validation: Curve | None = None,
             progress: bool = False, test: bool = True, between_iterations: Callable[[], None] | None = None,
             trained: Trained | None = None) -> CellResult:
    """Meta-train ``cell`` and score it on its test episodes; ``test`` False stops after meta-training (a
    hyperparameter search never sees the test episodes). After every meta-iteration a Ctrl-C that Python swallowed
    is raised again (bench.core.interrupts), then ``between_iterations`` may stop the cell by raising (lost
    ownership). Where the learner leaves its execution open, it is chosen by measurement first, again where the
    learner's execution phase changes, and where a step runs out of device memory the next candidate takes over
    (``bench.run.autotune.Autotuner``); the process's intra-op thread count is restored at the end. With
    ``trained``, the cell is only tested, on those meta-parameters: no meta-training, no validation."""
    threads = torch.get_num_threads()
    try:
        with wall_clock(torch.device(cell.device)) as seconds:
            clock = PhaseClock()
            result = _run_cell(cell, on_train, on_validation, progress, test, between_iterations, trained, clock)
            result.metrics.update(clock.metrics())
    finally:
        torch.set_num_threads(threads)
    result.metrics[m.CELL_SECONDS] = seconds[0]
    return result


def _run_cell(cell: Cell, on_train: Curve | None, on_validation: Curve | None, progress: bool, test: bool,
              between_iterations: Callable[[], None] | None, trained: Trained | None,
              clock: PhaseClock) -> CellResult:
    device, dtype = torch.device(cell.device), dtype_of(cell.training)
    training, evaluation = cell.training, cell.evaluation
    with clock.phase("setup"):
        data = load_dataset(cell.dataset.name, cell.dataset_options)
        learner = build_learner(cell)
        train_source = data.sampler("train", cell.n_way, cell.k_shot, cell.train_query, cell.seed)
        val_source = data.sampler("val", cell.n_way, cell.k_shot, cell.test_query, evaluation.episode_seed)
        batch_size = training.meta_batch_size
        code = code_identity(cell.learner, cell.dataset.name)
        # drawn once: the autotuner's first meta-batch is meta-iteration 0's
        batches = MetaBatches(train_source, batch_size, training.meta_iterations, device, dtype)
        first = batches(0)
    with clock.phase("autotune"):
        tuner = autotune.Autotuner(learner, cell.learner, code, first, device)
    saved_at = checkpoint.path_for(cell, code, data.content_identity)
    resumed: list[int] = []
    if trained is not None:
        learner.load_state_dict(trained.state)
        results = training_metrics(trained.metrics)
    else:
        with checkpoint.on_signals():
            results, resumed = _meta_train(cell, learner, tuner, batches, val_source, on_train, on_validation,
                                           progress, between_iterations, saved_at, clock)
    score_name = data.score_name
    state = {k: v.detach().cpu() for k, v in learner.state_dict().items()}
    # cross-domain: the test classes are another dataset's (validation stays on the training data's)
    with clock.phase("setup"):
        tested_on = data if cell.evaluation.dataset is None else load_dataset(*cell.test_dataset)
    execution = {**learner.execution(batch_size, device), **tuner.tags(),
                 "data_identity": of_train_and_test(data.content_identity, tested_on.content_identity)}
    if resumed:  # the meta-iterations it resumed from, in order
        execution["resumed_from"] = ",".join(map(str, resumed))
    if test:
        eval_meter = PhaseMeter(device, warmup=evaluation.warmup_episodes)
        with clock.phase("test"):
            tested = score_cell(cell, learner, tested_on, device, dtype, batch_size, eval_meter)
        results.update(eval_meter.summary("eval"))
        results.update(tested.metrics)
    checkpoint.remove(saved_at)  # the cell is done: what is left to log needs no training state
    if not test:
        return CellResult(results, [], score_name, state, execution)
    return CellResult(results, tested.primary, score_name, state, execution, tested.rows)


def _meta_train(cell: Cell, learner: MetaLearner, tuner: autotune.Autotuner, batches: MetaBatches,
                val_source: TaskSource, on_train: Curve | None,
                on_validation: Curve | None, progress: bool, between_iterations: Callable[[], None] | None,
                saved_at: Path, clock: PhaseClock) -> tuple[dict[str, float], list[int]]:
    """The meta-training loop with its validation passes, resumed from the checkpoint at ``saved_at`` where there is
    one and checkpointed there as it goes: the phase's metrics and the meta-iterations it resumed from."""
    device, dtype = torch.device(cell.device), dtype_of(cell.training)
    training, batch_size = cell.training, cell.training.meta_batch_size
    optimizer = build_optimizer(cell, learner)
    loop = _Loop(PhaseMeter(device, warmup=training.warmup_iterations), PhaseMeter(device),
                 CurveWindow(training.meta_iterations))
    meter, val_meter, window = loop.meter, loop.val_meter, loop.window
    state = checkpoint.load(saved_at)
    if state is not None:
        loop.resume(state, learner, optimizer, tuner, on_train, on_validation)
    schedule = checkpoint.Schedule(training.checkpoint_every)
    loss, validation = loop.loss, loop.validation
    bar = tqdm(range(loop.start, training.meta_iterations), desc=cell.title, leave=False, disable=not progress,
               unit="it", initial=loop.start, total=training.meta_iterations)
    with clock.phase("between"):  # the loop's own work: checks, the curve window, progress, checkpoints
        for iteration in bar:
            with clock.phase("sampling"):
                batch = batches(iteration)
            learner.start_iteration(iteration)
            with clock.phase("autotune"):
                tuner.before(iteration, batch)  # outside the meter: a new execution phase is measured here
            with clock.phase("steps"), meter.step():
                optimizer.zero_grad(set_to_none=True)
                result = tuner.meta_gradient(batch)
                names, values = step_values(result)
                values = values.tolist()  # the iteration's one device read
                loss = values[0]
                if not math.isfinite(loss):  # detected before the update: never trained through
                    raise NonFiniteLossError(f"meta-loss became {loss} at meta-iteration {iteration}")
                if training.meta_grad_clip is not None:
                    torch.nn.utils.clip_grad_value_(learner.meta_parameters(), training.meta_grad_clip)
                optimizer.step()
            interrupts.check()
            if between_iterations is not None:
                between_iterations()
            last = iteration + 1 == training.meta_iterations
            means = window.add(iteration, names, values, last)
            if means is not None:
                loop.points.append((TRAIN, iteration, means))
                if on_train is not None:
                    with clock.phase("logging"):
                        on_train(iteration, means)
            if iteration % 10 == 0:
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)  # the bar redraws at its own bounded rate
            if (iteration + 1) % training.validate_every == 0 or last:
                with clock.phase("validation"), val_meter.step():
                    scores = evaluate(learner, val_source, training.validation_episodes, device, dtype,
                                      per_pass=batch_size)
                validation.append(sum(scores) / len(scores))
                loop.points.append((VALIDATION, iteration + 1, {m.VAL_SCORE: validation[-1]}))
                if on_validation is not None:
                    with clock.phase("logging"):
                        on_validation(iteration + 1, {m.VAL_SCORE: validation[-1]})
            if not last and schedule.due():  # between meta-iterations, outside the meter
                loop.loss = loss
                checkpoint.save(saved_at, loop.state(iteration + 1, learner, optimizer, tuner))
                schedule.saved()
    results = meter.summary("train")
    results[m.VAL_SECONDS] = val_meter.summary("val")[m.VAL_SECONDS]
    results.update({m.FINAL_VAL_SCORE: validation[-1], m.FINAL_TRAIN_LOSS: loss})
    return results, loop.resumed


@dataclass
class _Loop:
    """What the training loop carries from one meta-iteration to the next besides the learner, the optimiser and
    the execution: what a checkpoint holds of it, and how a resumed loop takes it back."""

    meter: PhaseMeter
    val_meter: PhaseMeter
    window: CurveWindow
    start: int = 0  # the first meta-iteration this process runs
    loss: float = math.nan
    validation: list[float] = field(default_factory=list)
    # the curve points emitted so far, in order: (TRAIN or VALIDATION, meta-iteration, values)
    points: list[tuple[str, int, dict[str, float]]] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)  # the meta-iterations resumed from, in order

    def state(self, next_iteration: int, learner: MetaLearner, optimizer, tuner: autotune.Autotuner) -> dict:
        return {"iteration": next_iteration, "learner": learner.state_dict(), "optimizer": optimizer.state_dict(),
                "random": random_states(), "tuner": tuner.state(), "loss": self.loss,
                "validation": self.validation, "window": (self.window.sums, self.window.count),
                "points": self.points, "resumed": self.resumed,
                "meter": checkpoint.meter_state(self.meter), "val_meter": checkpoint.meter_state(self.val_meter)}

    def resume(self, state: dict, learner: MetaLearner, optimizer, tuner: autotune.Autotuner,
               on_train: Curve | None, on_validation: Curve | None) -> None:
        """Take the checkpointed loop back; the curve points emitted before it are emitted again (a cell claimed
        again logs into a new run). Random states last: nothing after them may draw."""
        learner.load_state_dict(state["learner"])
        optimizer.load_state_dict(state["optimizer"])
        tuner.resume(state["tuner"])
        checkpoint.set_meter_state(self.meter, state["meter"])
        checkpoint.set_meter_state(self.val_meter, state["val_meter"])
        self.window.sums, self.window.count = dict(state["window"][0]), state["window"][1]
        self.start, self.loss = state["iteration"], state["loss"]
        self.validation = list(state["validation"])
        self.points = list(state["points"])
        self.resumed = [*state["resumed"], self.start]
        emitters = {TRAIN: on_train, VALIDATION: on_validation}
        for kind, iteration, values in self.points:
            if emitters[kind] is not None:
                emitters[kind](iteration, values)
        set_random_states(state["random"])
