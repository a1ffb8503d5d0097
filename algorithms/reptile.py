"""`reptile`: Reptile (Nichol et al. 2018). Each task: k steps of SGD (or Adam, as the paper's few-shot runs) on the
task's examples (support and query together: Reptile has no held-out split inside a task) from the meta-parameters
theta to phi; the meta-gradient written into ``.grad`` is (theta - phi) averaged over the tasks.

Mapping the paper's outer step onto the runner: with ``training.optimizer: sgd`` and ``training.lr: epsilon``, the
runner's step theta <- theta - epsilon * mean(theta - phi) is the paper's theta <- theta + epsilon * mean(phi -
theta) (the paper anneals epsilon linearly from 1 to 0; the runner keeps it constant). Adam as the outer optimiser
rescales the step per parameter: no longer the paper's update. Simplifications against the reference code: each
inner step takes the task's examples as one full batch (the reference draws mini-batches of the task's data), and
test-time adaptation runs ``eval_inner_steps`` steps on the support set like every MAML-family learner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.func import functional_call

from meta_bench.algorithms.base import StepResult, register_learner
from meta_bench.algorithms.inner_loop import InnerLoopConfig, InnerLoopLearner, accumulate_grads, stack_losses
from meta_bench.datasets.episode import Episode


@dataclass(frozen=True)
class ReptileConfig(InnerLoopConfig):
    """inner_steps: k, the inner steps on each task (the paper's few-shot runs use 5 to 10); inner_optimizer: "sgd"
    or "adam" (the paper's choice, with beta1 = 0 as in its reference code)."""

    inner_lr: float = 0.1
    inner_steps: int = 5
    eval_inner_steps: int = 10
    inner_optimizer: Literal["sgd", "adam"] = "sgd"


@register_learner("reptile")
class Reptile(InnerLoopLearner):
    """Reptile: k inner SGD (or Adam) steps per task; .grad = mean over tasks of (theta - phi_k)."""

    Config = ReptileConfig

    def _adapt(self, x: torch.Tensor, y: torch.Tensor, steps: int, k_shot: int
               ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """``steps`` optimiser steps from a copy of the meta-parameters: the weights after, the loss before each."""
        fast = self.adapted_names()
        phi = {name: p.detach().clone().requires_grad_(name in fast) for name, p in self.model.named_parameters()}
        trained = [p for name, p in phi.items() if name in fast]
        if self.config.inner_optimizer == "adam":
            optimizer = torch.optim.Adam(trained, lr=self.config.inner_lr, betas=(0.0, 0.999))
        else:
            optimizer = torch.optim.SGD(trained, lr=self.config.inner_lr)
        losses = []
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = self._loss(functional_call(self.model, phi, (x,)), y, k_shot)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return {name: p.detach() for name, p in phi.items()}, losses

    def adapted_parameters(self, episode: Episode, steps: int) -> dict[str, torch.Tensor]:
        return self._adapt(episode.support_x, episode.support_y, steps, self._k_shot(episode))[0]

    def meta_gradient(self, batch: Episode) -> StepResult:
        tasks, k_shot = len(batch), self._k_shot(batch)
        theta = list(self.model.parameters())
        total, outputs, inner = 0.0, [], []
        for b in range(tasks):
            task = batch.task(b)
            x, y = torch.cat([task.support_x, task.query_x]), torch.cat([task.support_y, task.query_y])
            phi, losses = self._adapt(x, y, self.config.inner_steps, k_shot)
            accumulate_grads(theta, [t.detach() - p for t, p in zip(theta, phi.values())], 1.0 / tasks)
            with torch.no_grad():  # the adapted weights' query loss: a metric here, not the objective
                output = functional_call(self.model, phi, (task.query_x,))
                total = total + self._loss(output, task.query_y, k_shot)
            outputs.append(output)
            inner.append(stack_losses(losses, output))
        return self._result(total / tasks, torch.stack(outputs), batch, torch.stack(inner).mean(dim=0))
