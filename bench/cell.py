"""Running one cell: the harness owns the data, the model's initial weights, the outer optimiser and the clock;
the learner fills its slot (``meta_gradient``, ``predict``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm import tqdm

from algorithms import LEARNERS, MetaLearner, TaskSpec
from algorithms.backbones import build_model
from bench.evaluation import evaluate
from bench.measure import PhaseMeter, confidence_interval95
from bench.suite import Cell, TrainingSpec
from datasets import DATASETS, load_dataset


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass
class CellResult:
    metrics: dict[str, float]
    test_scores: list[float]
    score_name: str  # "accuracy" or "mse"
    state_dict: dict[str, torch.Tensor]
    train_losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)


def dtype_of(training: TrainingSpec) -> torch.dtype:
    return torch.float64 if training.dtype == "float64" else torch.float32


def make_optimizer(training: TrainingSpec, parameters) -> torch.optim.Optimizer:
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr)
    return torch.optim.SGD(parameters, lr=training.lr)


def build_learner(cell: Cell) -> MetaLearner:
    """The cell's learner on its device, with the initial weights of its seed (identical for every learner)."""
    data = load_dataset(cell.dataset.name, cell.dataset_options)
    entry = DATASETS[cell.dataset.name]
    classification = data.task_kind == "classification"
    task = TaskSpec(data.task_kind, cell.n_way, data.num_classes("train") if classification else 0, cell.seed)
    model = build_model(entry.backbone, data.input_shape, cell.n_way, cell.backbone, entry.conv_filters, cell.seed)
    model = model.to(device=torch.device(cell.device), dtype=dtype_of(cell.training))
    return LEARNERS[cell.learner](model, cell.learner_config, task)


def run_cell(cell: Cell, on_train: Callable[[int, float], None] | None = None,
             on_validation: Callable[[int, float], None] | None = None, progress: bool = False) -> CellResult:
    device, dtype = torch.device(cell.device), dtype_of(cell.training)
    training, evaluation = cell.training, cell.evaluation
    data = load_dataset(cell.dataset.name, cell.dataset_options)
    learner = build_learner(cell)
    optimizer = make_optimizer(training, learner.meta_parameters())
    train_source = data.sampler("train", cell.n_way, cell.k_shot, training.query, cell.seed)
    val_source = data.sampler("val", cell.n_way, cell.k_shot, evaluation.query, evaluation.episode_seed)
    test_source = data.sampler("test", cell.n_way, cell.k_shot, evaluation.query, evaluation.episode_seed)
    batch_size = training.meta_batch_size
    meter = PhaseMeter(device, warmup=training.warmup_iterations)
    losses, validation = [], []
    bar = tqdm(range(training.meta_iterations), desc=cell.title, leave=False, disable=not progress, unit="it")
    for iteration in bar:
        batch = train_source.batch(iteration * batch_size, batch_size).to(device, dtype)
        with meter.step():
            optimizer.zero_grad(set_to_none=True)
            result = learner.meta_gradient(batch)
            if not bool(torch.isfinite(result.loss)):  # detected before the update: never trained through
                raise NonFiniteLossError(f"meta-loss became {result.loss.item()} at meta-iteration {iteration}")
            optimizer.step()
        loss = result.loss.item()
        losses.append(loss)
        if on_train is not None:
            on_train(iteration, loss)
        if iteration % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
        if (iteration + 1) % training.validate_every == 0 or iteration + 1 == training.meta_iterations:
            scores = evaluate(learner, val_source, training.validation_episodes, device, dtype)
            validation.append((iteration + 1, sum(scores) / len(scores)))
            if on_validation is not None:
                on_validation(iteration + 1, validation[-1][1])
    metrics = meter.summary("train")
    eval_meter = PhaseMeter(device, warmup=evaluation.warmup_episodes)
    scores = evaluate(learner, test_source, evaluation.test_episodes, device, dtype, eval_meter)
    metrics.update(eval_meter.summary("eval"))
    score_name = "accuracy" if data.task_kind == "classification" else "mse"
    mean, half_width = confidence_interval95(scores)
    metrics.update({f"test_{score_name}": mean, f"test_{score_name}_ci95": half_width,
                    "final_train_loss": losses[-1], "final_val_score": validation[-1][1]})
    if not math.isfinite(mean):
        raise NonFiniteLossError(f"test {score_name} is {mean}")
    state = {k: v.detach().cpu() for k, v in learner.model.state_dict().items()}
    return CellResult(metrics, scores, score_name, state, losses, validation)
