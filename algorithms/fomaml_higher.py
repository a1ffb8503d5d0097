"""`fomaml/higher`: first-order MAML through the `higher` library (``innerloop_ctx`` without higher-order tracking)."""
from __future__ import annotations

import higher
import torch

from meta_bench.algorithms.base import StepResult, register_learner
from meta_bench.algorithms.inner_loop import InnerLoopLearner, accumulate_grads, stack_losses
from meta_bench.datasets.episode import Episode


@register_learner("fomaml/higher", algorithm="fomaml")
class HigherFOMAML(InnerLoopLearner):
    """First-order MAML with higher.innerloop_ctx (track_higher_grads=False); query gradients moved to the model."""

    def _inner_loop(self):
        fast = self.adapted_names()
        # parameters left out of the optimiser keep their values in the fast model (higher copies them unchanged)
        inner_optimizer = torch.optim.SGD([p for n, p in self.model.named_parameters() if n in fast],
                                          lr=self.config.inner_lr)
        # copy_initial_weights=True: the fast weights start as detached copies, so nothing reaches the model's
        # .grad behind our back; with track_higher_grads=False each step's weights are fresh leaves, so the
        # query gradient is taken at the adapted weights: exactly the first-order meta-gradient.
        return higher.innerloop_ctx(self.model, inner_optimizer, copy_initial_weights=True, track_higher_grads=False)

    def _adapt(self, fast, diff_optimizer, x: torch.Tensor, y: torch.Tensor, steps: int,
               k_shot: int) -> list[torch.Tensor]:
        losses = []
        for _ in range(steps):
            loss = self._loss(fast(x), y, k_shot)
            diff_optimizer.step(loss)
            losses.append(loss.detach())
        return losses

    def adapted_parameters(self, episode: Episode, steps: int) -> dict[str, torch.Tensor]:
        with self._inner_loop() as (fast, diff_optimizer):
            self._adapt(fast, diff_optimizer, episode.support_x, episode.support_y, steps, self._k_shot(episode))
            names = [name for name, _ in self.model.named_parameters()]
            return {name: p.detach() for name, p in zip(names, fast.parameters())}

    def meta_gradient(self, batch: Episode) -> StepResult:
        tasks, k_shot = len(batch), self._k_shot(batch)
        total, outputs, inner = 0.0, [], []
        for b in range(tasks):
            task = batch.task(b)
            with self._inner_loop() as (fast, diff_optimizer):
                losses = self._adapt(fast, diff_optimizer, task.support_x, task.support_y, self.config.inner_steps,
                                     k_shot)
                output = fast(task.query_x)
                loss = self._loss(output, task.query_y, k_shot)
                grads = torch.autograd.grad(loss, list(fast.parameters()))
            accumulate_grads(self.model.parameters(), grads, 1.0 / tasks)
            total = total + loss.detach()
            outputs.append(output.detach())
            inner.append(stack_losses(losses, output))
        return self._result(total / tasks, torch.stack(outputs), batch, torch.stack(inner).mean(dim=0))
