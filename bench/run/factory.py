"""The one factory of a cell's parts: the learner on its backbone (initial weights from the seed alone), in the
cell's dtype on its device, and the outer optimiser over the learner's meta-parameters."""
from __future__ import annotations

from typing import Any

import torch
# a torch optimiser imports torch._dynamo when first built (~1 s): here, at start-up, not inside a cell's clock, where
# a Ctrl-C could also land in the middle of that import
import torch._dynamo  # noqa: F401
from torch import nn

from bench.core.config import from_mapping
from bench.spec.suite import Cell, TrainingSpec
from meta_bench.algorithms import LEARNERS, MetaLearner, TaskSpec
from meta_bench.algorithms.backbones import BackboneConfig, build_model
from meta_bench.datasets import DATASETS, Dataset, load_dataset


def dtype_of(training: TrainingSpec) -> torch.dtype:
    return torch.float64 if training.dtype == "float64" else torch.float32


def make_optimizer(training: TrainingSpec, parameters) -> torch.optim.Optimizer:
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr)
    return torch.optim.SGD(parameters, lr=training.lr)


def task_of(data: Dataset, n_way: int, seed: int = 0) -> TaskSpec:
    classification = data.task_kind == "classification"
    return TaskSpec(data.task_kind, n_way, data.num_classes("train") if classification else 0, seed)


def new_model(dataset: str, n_way: int, *, dataset_options: Any = None, backbone: BackboneConfig = BackboneConfig(),
              seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """The dataset's backbone for ``n_way`` outputs, with the initial weights of ``seed``, on ``device`` in
    ``dtype``: every model of a seed starts identical."""
    data = load_dataset(dataset, dataset_options)
    entry = DATASETS[dataset]
    model = build_model(entry.backbone, data.input_shape, n_way, backbone, entry.conv_filters, seed)
    return model.to(device=torch.device(device), dtype=dtype)


def new_learner(dataset: str, name: str, config: Any, n_way: int, *, dataset_options: Any = None,
                backbone: BackboneConfig = BackboneConfig(), seed: int = 0, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> MetaLearner:
    """Learner ``name`` (``config``: its Config or a mapping of options) on ``new_model``'s backbone."""
    data = load_dataset(dataset, dataset_options)
    model = new_model(dataset, n_way, dataset_options=dataset_options, backbone=backbone, seed=seed, device=device,
                      dtype=dtype)
    cls = LEARNERS[name]
    if not isinstance(config, cls.Config):
        config = from_mapping(cls.Config, config, name)
    return cls(model, config, task_of(data, n_way, seed))


def build_learner(cell: Cell) -> MetaLearner:
    return new_learner(cell.dataset.name, cell.learner, cell.learner_config, cell.n_way,
                       dataset_options=cell.dataset_options, backbone=cell.backbone, seed=cell.seed,
                       device=cell.device, dtype=dtype_of(cell.training))


def build_optimizer(cell: Cell, learner: MetaLearner) -> torch.optim.Optimizer:
    return make_optimizer(cell.training, learner.meta_parameters())
