"""Running one cell: the harness owns the data, the model's initial weights, the outer optimiser and the clock;
the learner fills its slot (``meta_gradient``, ``predict``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm import tqdm

from algorithms import LEARNERS, MetaLearner, TaskSpec
from algorithms.backbones import BackboneConfig, build_model
from bench.config import from_mapping
from bench.evaluation import evaluate
from bench.measure import PhaseMeter, confidence_interval95
from bench.suite import Cell, TrainingSpec
from datasets import DATASETS, Dataset, load_dataset


class NonFiniteLossError(FloatingPointError):
    pass


@dataclass
class CellResult:
    metrics: dict[str, float]
    test_scores: list[float]
    score_name: str  # "accuracy" or "mse"
    state_dict: dict[str, torch.Tensor]


def dtype_of(training: TrainingSpec) -> torch.dtype:
    return torch.float64 if training.dtype == "float64" else torch.float32


def make_optimizer(training: TrainingSpec, parameters) -> torch.optim.Optimizer:
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr)
    return torch.optim.SGD(parameters, lr=training.lr)


def task_of(data: Dataset, n_way: int, seed: int = 0) -> TaskSpec:
    classification = data.task_kind == "classification"
    return TaskSpec(data.task_kind, n_way, data.num_classes("train") if classification else 0, seed)


def new_learner(dataset: str, name: str, config: Any, n_way: int, *, dataset_options: Any = None,
                backbone: BackboneConfig = BackboneConfig(), seed: int = 0, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> MetaLearner:
    """Learner ``name`` (``config``: its Config or a mapping of options) on the dataset's backbone, built on
    ``device`` in ``dtype`` with the initial weights of ``seed``: every learner of a seed starts identical."""
    data = load_dataset(dataset, dataset_options)
    entry = DATASETS[dataset]
    model = build_model(entry.backbone, data.input_shape, n_way, backbone, entry.conv_filters, seed)
    model = model.to(device=torch.device(device), dtype=dtype)
    cls = LEARNERS[name]
    if not isinstance(config, cls.Config):
        config = from_mapping(cls.Config, config, name)
    return cls(model, config, task_of(data, n_way, seed))


def build_learner(cell: Cell) -> MetaLearner:
    return new_learner(cell.dataset.name, cell.learner, cell.learner_config, cell.n_way,
                       dataset_options=cell.dataset_options, backbone=cell.backbone, seed=cell.seed,
                       device=cell.device, dtype=dtype_of(cell.training))


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
            loss = result.loss.item()  # the iteration's one device read
            if not math.isfinite(loss):  # detected before the update: never trained through
                raise NonFiniteLossError(f"meta-loss became {loss} at meta-iteration {iteration}")
            optimizer.step()
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
    return CellResult(metrics, scores, score_name, state)
