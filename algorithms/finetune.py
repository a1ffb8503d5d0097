"""`finetune`: the Baseline of Chen et al. 2019, "A Closer Look at Few-shot Classification".

Meta-training is ordinary supervised training of the backbone and a linear classifier over all meta-train
classes (global class ids), on the images of each meta-batch. Evaluation freezes the backbone, computes the
support and query features once, and trains a fresh N-way linear head on the support set (SGD, momentum 0.9,
dampening 0.9, weight decay 1e-3, lr 0.01, 100 steps, as in their code); ``finetune_backbone`` trains the whole
network instead. Regression tasks have no global classes: meta-training regresses every task's points, and
evaluation fine-tunes the trained head (and the backbone if asked).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from bench.seeding import seeded
from algorithms.base import MetaLearner, StepResult, register_learner, task_loss, task_score
from datasets.episode import Episode


@dataclass(frozen=True)
class FinetuneConfig:
    """head_*: the SGD that fits the evaluation head on a support set; finetune_backbone: fit the whole network."""

    head_steps: int = 100
    head_lr: float = 0.01
    head_momentum: float = 0.9
    head_dampening: float = 0.9
    head_weight_decay: float = 0.001
    finetune_backbone: bool = False

    def __post_init__(self) -> None:
        if self.head_steps < 0 or self.head_lr < 0 or self.head_weight_decay < 0:
            raise ValueError(f"head_steps, head_lr and head_weight_decay must be >= 0, got "
                             f"{self.head_steps}, {self.head_lr}, {self.head_weight_decay}")


@register_learner("finetune")
class Finetune(MetaLearner):
    """Baseline (Chen et al. 2019): supervised pre-training on all classes; a fresh linear head fit per episode."""

    Config = FinetuneConfig

    def __init__(self, model, config, task):
        super().__init__(model, config, task)
        self.classification = task.kind == "classification"
        if self.classification:
            if task.num_train_classes < task.n_way:
                raise ValueError(f"finetune needs the number of meta-train classes, got {task.num_train_classes}")
            parameter = next(model.parameters())
            # PyTorch's default init, seeded. Not zeros: a zero head sends no gradient to the backbone at first,
            # and Adam turns those near-zero gradients into full-size steps that scramble the features.
            with seeded(task.seed):
                self.global_head = nn.Linear(model.feature_dim, task.num_train_classes).to(parameter)

    def meta_parameters(self) -> list[nn.Parameter]:
        extra = list(self.global_head.parameters()) if self.classification else []
        return list(self.model.parameters()) + extra

    def meta_gradient(self, batch: Episode) -> StepResult:
        x = torch.cat([batch.support_x.flatten(0, 1), batch.query_x.flatten(0, 1)])
        if self.classification:
            # within-task labels -> global class ids
            y = torch.cat([batch.classes.gather(1, batch.support_y).flatten(),
                           batch.classes.gather(1, batch.query_y).flatten()])
            output = self.global_head(self.model.features(x))
        else:
            y = torch.cat([batch.support_y.flatten(0, 1), batch.query_y.flatten(0, 1)])
            output = self.model(x)
        loss = task_loss(self.task.kind, output, y)
        loss.backward()
        score = task_score(self.task.kind, output.detach().unsqueeze(0), y.unsqueeze(0)).mean()
        return StepResult(loss.detach(), {"query_score": score})

    def _optimizer(self, parameters) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(parameters, lr=c.head_lr, momentum=c.head_momentum, dampening=c.head_dampening,
                               weight_decay=c.head_weight_decay)

    def _fit(self, network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer = self._optimizer(network.parameters())
        for _ in range(self.config.head_steps):
            optimizer.zero_grad(set_to_none=True)
            task_loss(self.task.kind, network(x), y).backward()
            optimizer.step()

    def predict(self, episode: Episode) -> torch.Tensor:
        if self.config.finetune_backbone or not self.classification:
            network = copy.deepcopy(self.model)
            if self.classification:
                network.head = self._fresh_head(network)
            elif not self.config.finetune_backbone:
                network.features.requires_grad_(False)
            self._fit(network, episode.support_x, episode.support_y)
            with torch.no_grad():
                return network(episode.query_x)
        with torch.no_grad():  # frozen backbone: features once per episode
            support, query = self.model.features(episode.support_x), self.model.features(episode.query_x)
        head = self._fresh_head(self.model)
        self._fit(head, support, episode.support_y)
        with torch.no_grad():
            return head(query)

    def _fresh_head(self, network: nn.Module) -> nn.Linear:
        head = nn.Linear(network.feature_dim, self.task.n_way).to(next(network.parameters()))
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return head
