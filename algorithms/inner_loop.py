"""What every gradient-based (MAML-family) learner shares: the inner-loop config and evaluation by adaptation."""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from torch.func import functional_call

from meta_bench.algorithms.backbones import is_batch_norm
from meta_bench.algorithms.base import MetaLearner, StepResult, task_loss, task_score
from meta_bench.datasets.episode import Episode


@dataclass(frozen=True)
class InnerLoopConfig:
    """inner_lr: step size of the inner SGD; inner_steps: inner steps in meta-training;
    eval_inner_steps: inner steps when adapting to a test episode (Finn et al. use more at test time);
    loss_reduction: "mean" (mean over a task's examples) or "sum_over_k" (Finn et al.'s reference: the sum over the
    examples divided by the support shots K, so the inner step is inner_lr * N * grad(mean) at N-way), for the
    support and query losses alike; adapt_bn: whether batch-norm parameters are adapted in the inner loop (Finn et
    al.'s reference keeps them out of the fast weights: meta-learned by the outer optimiser only)."""

    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_inner_steps: int = 3
    loss_reduction: Literal["mean", "sum_over_k"] = "mean"
    adapt_bn: bool = True

    def __post_init__(self) -> None:
        if self.inner_lr < 0:
            raise ValueError(f"inner_lr must be >= 0, got {self.inner_lr}")
        if self.inner_steps < 0 or self.eval_inner_steps < 0:
            raise ValueError(f"inner_steps and eval_inner_steps must be >= 0, got "
                             f"{self.inner_steps}, {self.eval_inner_steps}")


class InnerLoopLearner(MetaLearner):
    """A learner whose adaptation is plain SGD on the support loss; variants differ in how they compute it."""

    Config = InnerLoopConfig
    test_steps_option = "eval_inner_steps"

    @abstractmethod
    def adapted_parameters(self, episode: Episode, steps: int) -> dict[str, torch.Tensor]:
        """Detached parameters after ``steps`` inner SGD steps on ``episode``'s support set."""

    def predict(self, episode: Episode) -> torch.Tensor:
        params = self.adapted_parameters(episode, self.config.eval_inner_steps)
        with torch.no_grad():
            return self._forward(params, episode.query_x)

    def predict_curve(self, batch: Episode, steps: int) -> torch.Tensor:
        """Plain SGD on each episode's support loss over the fast weights at ``inner_lr``, as every variant adapts
        (the functional learner overrides it for its learned rates and task batching); the query outputs before the
        first step and after each."""
        curves = []
        for i in range(len(batch)):
            episode = batch.task(i)
            params = {name: p.detach().requires_grad_() for name, p in self.model.named_parameters()}
            names, k_shot = [n for n in params if n in self.adapted_names()], self._k_shot(episode)
            outputs = []
            for step in range(steps + 1):
                with torch.no_grad():
                    outputs.append(self._forward(params, episode.query_x))
                if step == steps:
                    break
                loss = self._loss(self._forward(params, episode.support_x), episode.support_y, k_shot)
                grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))
                params = {n: (p - self.config.inner_lr * grads[n]).detach().requires_grad_() if n in grads else p
                          for n, p in params.items()}
            curves.append(torch.stack(outputs))
        return torch.stack(curves, dim=1)

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The model's output at ``params``: how every inner-loop learner runs its model on a parameter dict."""
        return functional_call(self.model, params, (x,))

    def _result(self, query_loss: torch.Tensor, query_outputs: torch.Tensor, batch: Episode,
                inner_losses: torch.Tensor) -> StepResult:
        """Shared metrics: mean query loss, adapted query score (``query_outputs``: every task's, [T, ...]), mean
        support loss per inner step."""
        score = task_score(self.task.kind, query_outputs, batch.query_y).mean()
        return StepResult(query_loss.detach(), {"query_score": score.detach(), "inner_losses": inner_losses.detach()})

    def _loss(self, output: torch.Tensor, target: torch.Tensor, k_shot: int) -> torch.Tensor:
        per_class = k_shot if self.config.loss_reduction == "sum_over_k" else None
        return task_loss(self.task.kind, output, target, per_class)

    def _k_shot(self, episode: Episode) -> int:
        """Support examples per class of one episode (or of each episode of a batch)."""
        labels = episode.support_y.shape[-1] if self.task.kind == "classification" else episode.support_y.shape[-2]
        return labels // self.task.n_way

    def adapted_names(self) -> set[str]:
        """The parameters the inner loop adapts (the fast weights); the others are meta-learned only."""
        frozen = set()
        if not self.config.adapt_bn:
            for prefix, module in self.model.named_modules():
                if is_batch_norm(module):
                    frozen |= {f"{prefix}.{name}" for name, _ in module.named_parameters()}
        return {name for name, _ in self.model.named_parameters()} - frozen


def stack_losses(losses: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Inner losses of one task as a [steps] tensor (empty when no step was taken)."""
    return torch.stack(losses) if losses else like.new_zeros(0)


def accumulate_grads(parameters, grads, scale: float) -> None:
    """Add ``scale * grad`` into each parameter's ``.grad``: how gradients found elsewhere reach the meta-parameters."""
    for parameter, grad in zip(parameters, grads):
        if parameter.grad is None:
            parameter.grad = grad * scale
        else:
            parameter.grad.add_(grad, alpha=scale)
