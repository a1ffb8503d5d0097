"""`finetune`: the Baseline of Chen et al. 2019, "A Closer Look at Few-shot Classification".

Meta-training is ordinary supervised training of the backbone and a classifier over all meta-train classes (global
class ids), on the images of each meta-batch. Evaluation freezes the backbone, computes the support and query
features once, and trains a fresh N-way head on the support set with SGD (lr 0.01, momentum 0.9, dampening 0.9,
weight decay 1e-3, their optimiser). Their code runs ``head_epochs`` = 100 epochs of batch-4 SGD over the shuffled
support set (200 steps at 5-way 1-shot, 700 at 5-shot) from PyTorch's default ``nn.Linear`` init
(``head_init: default``); the harness's default, 100 full-batch steps from a zero head (``head_batch_size: 0``,
``head_init: zeros``), is its own cheaper choice. ``classifier: cosine`` is Baseline++ (a weight-normalised linear
layer on L2-normalised features, scaled by 2 for at most 200 classes and 10 above, as their ``distLinear``).
``finetune_backbone`` trains the whole network instead. With a running-statistics backbone (``backbone.batch_norm:
running_stats``, their ordinary batch norm) features are computed in evaluation mode. Regression tasks have no
global classes: meta-training regresses every task's points, and evaluation fine-tunes the trained head (and the
backbone if asked).
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from bench.core.seeding import seeded
from meta_bench.algorithms.base import MetaLearner, StepResult, register_learner, task_loss, task_score
from meta_bench.datasets.episode import Episode


@dataclass(frozen=True)
class FinetuneConfig:
    """head_*: the SGD that fits the evaluation head on a support set (head_batch_size 0: the whole support set, one
    step an epoch); head_init: "zeros" or "default" (nn.Linear's); classifier: "linear" (Baseline) or "cosine"
    (Baseline++); finetune_backbone: fit the whole network."""

    head_epochs: int = 100  # passes over the support set when fitting the head at test time
    head_batch_size: int = 0  # support examples per step (0: the whole support set)
    head_lr: float = 0.01  # the head's SGD learning rate at test time
    head_momentum: float = 0.9  # its SGD momentum
    head_dampening: float = 0.9  # its SGD dampening
    head_weight_decay: float = 0.001  # its SGD weight decay
    head_init: Literal["zeros", "default"] = "zeros"
    classifier: Literal["linear", "cosine"] = "linear"
    finetune_backbone: bool = False

    def __post_init__(self) -> None:
        if self.head_epochs < 0 or self.head_batch_size < 0 or self.head_lr < 0 or self.head_weight_decay < 0:
            raise ValueError(f"head_epochs, head_batch_size, head_lr and head_weight_decay must be >= 0, got "
                             f"{self.head_epochs}, {self.head_batch_size}, {self.head_lr}, {self.head_weight_decay}")


class CosineClassifier(nn.Module):
    """Baseline++'s ``distLinear`` (Chen et al. 2019): scale * <w_c, x / |x|> with a weight-normalised w."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        self.linear = weight_norm(nn.Linear(features, classes, bias=False), dim=0)
        self.scale = 2.0 if classes <= 200 else 10.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(x / (x.norm(dim=1, keepdim=True) + 1e-5))


@contextlib.contextmanager
def evaluation_mode(network: nn.Module) -> Iterator[None]:
    """Running-statistics batch norm uses its statistics, not the batch's; restored after."""
    was = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was)


@register_learner("finetune")
class Finetune(MetaLearner):
    """Baseline / Baseline++ (Chen et al. 2019): supervised pre-training on all classes; a fresh head fit per episode."""

    Config = FinetuneConfig
    test_steps_option = "head_epochs"  # epochs of the evaluation fit: steps, with head_batch_size 0 (full batch)

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
                self.global_head = self._classifier(model.feature_dim, task.num_train_classes).to(parameter)
        # ordinary batch norm (running statistics): features for a test episode come from evaluation mode
        self.running_stats = any(getattr(m, "track_running_stats", False) for m in model.modules())

    def _classifier(self, features: int, classes: int) -> nn.Module:
        return CosineClassifier(features, classes) if self.config.classifier == "cosine" else nn.Linear(features,
                                                                                                        classes)

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

    def _fit(self, network: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int | None = None,
             after_epoch: Callable[[], None] | None = None) -> None:
        """``epochs`` (default ``head_epochs``) passes over the support set in shuffled mini-batches of
        ``head_batch_size``; ``after_epoch`` is called after each."""
        optimizer = self._optimizer([p for p in network.parameters() if p.requires_grad])
        size = len(y)
        batch = self.config.head_batch_size or size
        order = torch.Generator().manual_seed(self.task.seed)  # the same shuffles for every episode and learner
        for _ in range(self.config.head_epochs if epochs is None else epochs):
            permutation = torch.randperm(size, generator=order).to(y.device) if batch < size else \
                torch.arange(size, device=y.device)
            for start in range(0, size, batch):
                rows = permutation[start:start + batch]
                optimizer.zero_grad(set_to_none=True)
                task_loss(self.task.kind, network(x[rows]), y[rows]).backward()
                optimizer.step()
            if after_epoch is not None:
                after_epoch()

    def head_steps(self, support_examples: int) -> int:
        """Optimiser steps of one head fit: ceil(N*K / batch) per epoch."""
        batch = self.config.head_batch_size or support_examples
        return math.ceil(support_examples / batch) * self.config.head_epochs

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), evaluation_mode(self.model) if self.running_stats else contextlib.nullcontext():
            return self.model.features(x)

    def predict(self, episode: Episode) -> torch.Tensor:
        return self._adapt(episode, self.config.head_epochs)[-1]

    def predict_curve(self, batch: Episode, steps: int) -> torch.Tensor:
        """The query outputs before the fit and after each of ``steps`` epochs, one fit per episode."""
        return torch.stack([torch.stack(self._adapt(batch.task(i), steps, every_epoch=True))
                            for i in range(len(batch))], dim=1)

    def _adapt(self, episode: Episode, epochs: int, every_epoch: bool = False) -> list[torch.Tensor]:
        """Fit on the support set for ``epochs`` epochs; the query outputs at the end (with ``every_epoch``: before
        the fit and after every epoch)."""
        whole = self.config.finetune_backbone or not self.classification
        if whole:
            fitted = copy.deepcopy(self.model)
            if self.classification:
                fitted.head = self._fresh_head(fitted)
            elif not self.config.finetune_backbone:
                fitted.features.requires_grad_(False)
            x, query = episode.support_x, episode.query_x
        else:
            x, query = self._features(episode.support_x), self._features(episode.query_x)  # once per episode
            fitted = self._fresh_head(self.model)
        seen: list[torch.Tensor] = []

        def record() -> None:
            seen.append(self._query_outputs(fitted, query, whole))

        if every_epoch:
            record()
        self._fit(fitted, x, episode.support_y, epochs, record if every_epoch else None)
        if not every_epoch:
            record()
        return seen

    def _query_outputs(self, fitted: nn.Module, query: torch.Tensor, whole_network: bool) -> torch.Tensor:
        """The fitted network's (or head's, on precomputed features) query outputs; a running-statistics network in
        evaluation mode."""
        with torch.no_grad(), evaluation_mode(fitted) if whole_network and self.running_stats else \
                contextlib.nullcontext():
            return fitted(query)

    def _fresh_head(self, network: nn.Module) -> nn.Module:
        """A new N-way head: zeros, or PyTorch's default init (always for the cosine head, whose weight norm
        cannot start at zero), seeded so that every episode starts it the same."""
        with seeded(self.task.seed):
            head = self._classifier(network.feature_dim, self.task.n_way).to(next(network.parameters()))
        if self.config.head_init == "zeros" and self.config.classifier == "linear":
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        return head
