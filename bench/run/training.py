"""Running one cell: the harness owns the data, the model's initial weights, the outer optimiser and the clock;
the learner fills its slot (``meta_gradient``, ``predict``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from bench.core import interrupts
from bench.core import metrics as m
from bench.run.evaluation import evaluate
from bench.run.factory import build_learner, build_optimizer, dtype_of
from bench.run.measure import PhaseMeter, confidence_interval95
from bench.spec.suite import Cell
from datasets import load_dataset

Curve = Callable[[int, dict[str, float]], None]  # (meta-iteration, values by metric name)


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass
class CellResult:
    metrics: dict[str, float]
    test_scores: list[float]  # per test episode, by episode index
    score_name: str  # "accuracy" or "mse"
    state_dict: dict[str, torch.Tensor]
    execution: dict[str, str]  # how the learner actually ran (e.g. task_batching resolved from "auto")


def _step_values(result) -> tuple[list[str], torch.Tensor]:
    """The step's loss and the learner's metrics as names and one flat tensor, so one device read gets them all."""
    names, parts = [m.TRAIN_LOSS], [result.loss.reshape(1)]
    for key, value in result.metrics.items():
        flat = value.detach().reshape(-1)
        names.extend(m.learner_curves(key, flat.numel()))
        parts.append(flat.to(result.loss.dtype))
    return names, torch.cat(parts)


def run_cell(cell: Cell, on_train: Curve | None = None, on_validation: Curve | None = None,
             progress: bool = False, test: bool = True, between_iterations: Callable[[], None] | None = None
             ) -> CellResult:
    """Meta-train ``cell`` and score it on its test episodes; ``test`` False stops after meta-training (a
    hyperparameter search never sees the test episodes). After every meta-iteration a Ctrl-C that Python swallowed
    is raised again (bench.core.interrupts), then ``between_iterations`` may stop the cell by raising (lost
    ownership)."""
    device, dtype = torch.device(cell.device), dtype_of(cell.training)
    training, evaluation = cell.training, cell.evaluation
    data = load_dataset(cell.dataset.name, cell.dataset_options)
    learner = build_learner(cell)
    optimizer = build_optimizer(cell, learner)
    train_source = data.sampler("train", cell.n_way, cell.k_shot, cell.train_query, cell.seed)
    val_source = data.sampler("val", cell.n_way, cell.k_shot, cell.test_query, evaluation.episode_seed)
    test_source = data.sampler("test", cell.n_way, cell.k_shot, cell.test_query, evaluation.episode_seed)
    batch_size = training.meta_batch_size
    meter = PhaseMeter(device, warmup=training.warmup_iterations)
    loss, validation = math.nan, []
    bar = tqdm(range(training.meta_iterations), desc=cell.title, leave=False, disable=not progress, unit="it")
    for iteration in bar:
        batch = train_source.batch(iteration * batch_size, batch_size).to(device, dtype)
        with meter.step():
            optimizer.zero_grad(set_to_none=True)
            learner.start_iteration(iteration)
            result = learner.meta_gradient(batch)
            names, values = _step_values(result)
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
        if on_train is not None:
            on_train(iteration, dict(zip(names, values)))
        if iteration % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
        if (iteration + 1) % training.validate_every == 0 or iteration + 1 == training.meta_iterations:
            scores = evaluate(learner, val_source, training.validation_episodes, device, dtype)
            validation.append(sum(scores) / len(scores))
            if on_validation is not None:
                on_validation(iteration + 1, {m.VAL_SCORE: validation[-1]})
    results = meter.summary("train")
    results.update({m.FINAL_VAL_SCORE: validation[-1], m.FINAL_TRAIN_LOSS: loss})
    score_name = data.score_name
    state = {k: v.detach().cpu() for k, v in learner.state_dict().items()}
    if not test:
        return CellResult(results, [], score_name, state, learner.execution(batch_size, device))
    eval_meter = PhaseMeter(device, warmup=evaluation.warmup_episodes)
    scores = evaluate(learner, test_source, evaluation.test_episodes, device, dtype, eval_meter)
    results.update(eval_meter.summary("eval"))
    mean, half_width = confidence_interval95(scores)
    results.update({m.SCORES[score_name].name: mean, m.ci95(score_name): half_width})
    if not math.isfinite(mean):
        raise NonFiniteLossError(f"test {score_name} is {mean}")
    return CellResult(results, scores, score_name, state, learner.execution(batch_size, device))
