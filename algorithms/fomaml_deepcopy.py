"""`fomaml/deepcopy`: first-order MAML the textbook way (a deepcopy of the model per task), made correct.

The textbook snippet calls ``.backward()`` on the copy's query loss and steps the meta-optimiser: the gradients
land on the copy and the meta-parameters never move. Here they are moved onto the meta-parameters.
"""
from __future__ import annotations

import copy

import torch

from meta_bench.algorithms.base import StepResult, register_learner
from meta_bench.algorithms.inner_loop import InnerLoopLearner, accumulate_grads, stack_losses
from meta_bench.datasets.episode import Episode


@register_learner("fomaml/deepcopy", algorithm="fomaml")
class DeepcopyFOMAML(InnerLoopLearner):
    """First-order MAML: per task, deepcopy the model, adapt the copy with torch.optim.SGD, move its query gradient."""

    def _adapted_copy(self, x: torch.Tensor, y: torch.Tensor, steps: int, k_shot: int):
        clone = copy.deepcopy(self.model)  # also copies .grad: set_to_none below clears it
        fast = self.adapted_names()
        optimizer = torch.optim.SGD([p for n, p in clone.named_parameters() if n in fast], lr=self.config.inner_lr)
        losses = []
        for _ in range(steps):
            clone.zero_grad(set_to_none=True)
            loss = self._loss(clone(x), y, k_shot)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return clone, losses

    def adapted_parameters(self, episode: Episode, steps: int) -> dict[str, torch.Tensor]:
        clone, _ = self._adapted_copy(episode.support_x, episode.support_y, steps, self._k_shot(episode))
        return {name: p.detach() for name, p in clone.named_parameters()}

    def meta_gradient(self, batch: Episode) -> StepResult:
        tasks, k_shot = len(batch), self._k_shot(batch)
        total, outputs, inner = 0.0, [], []
        for b in range(tasks):
            task = batch.task(b)
            clone, losses = self._adapted_copy(task.support_x, task.support_y, self.config.inner_steps, k_shot)
            clone.zero_grad(set_to_none=True)
            output = clone(task.query_x)
            loss = self._loss(output, task.query_y, k_shot)
            loss.backward()
            # the textbook trap: these gradients sit on the copy, not on the meta-parameters
            accumulate_grads(self.model.parameters(), [p.grad for p in clone.parameters()], 1.0 / tasks)
            total = total + loss.detach()
            outputs.append(output.detach())
            inner.append(stack_losses(losses, output))
        return self._result(total / tasks, torch.stack(outputs), batch, torch.stack(inner).mean(dim=0))
