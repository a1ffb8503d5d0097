"""`fomaml/functional`: MAML with no model copies: parameter dicts, ``torch.func.functional_call`` and a pure inner
loop, tasks batched with ``torch.func.vmap`` or taken one by one.

First and second order differ in one flag: the inner gradients are taken with ``create_graph`` (second order,
``maml``) or without it (first order). Without it an adapted weight is ``theta - lr * g`` with ``g`` a constant,
so backpropagating the query loss to ``theta`` yields the query gradient at the adapted weights: FOMAML.

Gradients come from ``torch.autograd.grad`` rather than ``torch.func.grad``: the two compute the same thing,
but torch.func's grad transform refuses saved-tensor hooks, which is how every learner's memory is measured.
``vmap`` still batches the tasks' forward passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal

import torch
from torch.func import vmap

from algorithms.base import StepResult, register_learner
from algorithms.inner_loop import InnerLoopConfig, InnerLoopLearner, stack_losses
from datasets.episode import Episode

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FunctionalConfig(InnerLoopConfig):
    """task_batching: "loop" takes tasks one by one (one backward each), "vmap" batches ``vmap_chunk`` tasks per
    call (0: the whole meta-batch), "auto" picks by device from measurement: loop on CPU, vmap elsewhere."""

    task_batching: Literal["auto", "loop", "vmap"] = "auto"
    vmap_chunk: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vmap_chunk < 0:
            raise ValueError(f"vmap_chunk must be >= 0, got {self.vmap_chunk}")


@register_learner("fomaml/functional")
class FunctionalFOMAML(InnerLoopLearner):
    """First-order MAML, functional: parameter dicts, functional_call, tasks looped or batched with vmap."""

    Config = FunctionalConfig

    @property
    def second_order(self) -> bool:
        return False

    def _chunk(self, tasks: int, device: torch.device) -> int:
        """Tasks per forward: 0 means one task at a time without vmap."""
        mode = self.config.task_batching
        if mode == "auto":
            mode = "loop" if device.type == "cpu" else "vmap"
        return 0 if mode == "loop" else (self.config.vmap_chunk or tasks)

    def execution(self, tasks: int, device: torch.device) -> dict[str, str]:
        chunk = self._chunk(tasks, device)
        return {"task_batching": "vmap" if chunk else "loop", "vmap_chunk": str(chunk)}

    def _inner_loop(self, params: Params, forward: Callable, losses_of: Callable, x: torch.Tensor, y: torch.Tensor,
                    steps: int, create_graph: bool, after_step: Callable[[int, Params], None] | None = None
                    ) -> tuple[Params, list[torch.Tensor]]:
        """``steps`` SGD steps on the support loss over the fast weights: a pure function of ``params``;
        ``after_step(step, params)`` sees the weights after each step (MAML++'s multi-step loss)."""
        history, fast = [], self.adapted_names()
        for step in range(steps):
            losses = losses_of(forward(params, x), y)  # one loss per task (a scalar in loop mode)
            names = [name for name in params if name in fast]
            grads = dict(zip(names, torch.autograd.grad(losses.sum(), [params[n] for n in names],
                                                        create_graph=create_graph)))
            params = {name: self._step(name, step, p, grads[name]) if name in grads else p
                      for name, p in params.items()}
            history.append(losses.detach())
            if after_step is not None:
                after_step(step, params)
        return params, history

    def _step(self, name: str, step: int, parameter: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Inner step ``step`` of one fast weight (Meta-SGD and MAML++'s LSLR learn the step size)."""
        return parameter - self.config.inner_lr * grad

    def _step_loss_weights(self) -> list[float] | None:
        """Weights of the query loss after each inner step in the meta-objective; None: the final step's alone."""
        return None

    def adapted_parameters(self, episode: Episode, steps: int) -> dict[str, torch.Tensor]:
        start = {name: p.detach().requires_grad_() for name, p in self.model.named_parameters()}
        losses_of = partial(self._loss, k_shot=self._k_shot(episode))
        adapted, _ = self._inner_loop(start, self._forward, losses_of, episode.support_x, episode.support_y,
                                      steps, create_graph=False)
        return {name: p.detach() for name, p in adapted.items()}

    def meta_gradient(self, batch: Episode) -> StepResult:
        tasks = len(batch)
        chunk = self._chunk(tasks, batch.query_x.device)
        theta = dict(self.model.named_parameters())
        task_loss_of = partial(self._loss, k_shot=self._k_shot(batch))
        total, outputs, inner = 0.0, [], []
        for start in range(0, tasks, chunk or 1):
            if chunk:  # tasks [start, stop) at once: parameters gain a task dimension
                part = batch.tasks(start, min(start + chunk, tasks))
                size = len(part)
                params = {name: p.expand(size, *p.shape) for name, p in theta.items()}
                forward, losses_of = vmap(self._forward), vmap(task_loss_of)
            else:
                part, size, params = batch.task(start), 1, theta
                forward, losses_of = self._forward, task_loss_of
            weights, weighted, step_outputs = self._step_loss_weights(), [], []

            def weigh_query_loss(step: int, fast: Params, part: Episode = part) -> None:
                step_outputs.append(forward(fast, part.query_x))
                weighted.append(weights[step] * losses_of(step_outputs[-1], part.query_y).sum())

            adapted, history = self._inner_loop(params, forward, losses_of, part.support_x, part.support_y,
                                                self.config.inner_steps, self.second_order,
                                                weigh_query_loss if weights else None)
            # the multi-step loss has run the final weights' query forward already
            output = step_outputs[-1] if step_outputs else forward(adapted, part.query_x)
            query_losses = losses_of(output, part.query_y)
            objective = sum(weighted) if weighted else query_losses.sum()
            # one backward per chunk: its graph is freed before the next chunk is built
            (objective / tasks).backward()
            total = total + query_losses.detach().sum()
            outputs.extend(output.detach().reshape(size, *output.shape[-2:]).unbind(0))
            steps = stack_losses(history, output)
            inner.append(steps.reshape(len(history), -1).sum(dim=1) if history else steps)
        return self._result(total / tasks, outputs, batch, torch.stack(inner).sum(dim=0) / tasks)
