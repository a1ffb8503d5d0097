"""The functional inner-loop learner: MAML and its family by composition, with no model copies (parameter dicts,
``torch.func.functional_call``, a pure inner loop, tasks looped or batched with ``torch.func.vmap``).

What varies is an option, not a subclass (``algorithms/presets.py`` names the published combinations):
- order of differentiation: second order (Finn et al. 2017) takes the inner gradients with ``create_graph``; first
  order (``first_order``) without it, so an adapted weight is ``theta - lr * g`` with ``g`` a constant and the query
  loss backpropagates to ``theta`` as the query gradient at the adapted weights (FOMAML);
  ``first_order_epochs``: first order for the first E epochs, second after (MAML++'s derivative-order annealing; the
  reference's ``first_order_to_second_order_epoch: e`` is E = e + 1);
- the fast weights: every parameter, or the classifier head alone (``fast_weights: head``, ANIL, Raghu et al. 2020);
- the inner rates: ``fixed`` (``inner_lr``), ``per_layer_step`` (MAML++'s LSLR, Antoniou et al. 2019: a learned
  rate per fast-weight tensor and per step; test-time steps beyond the trained ones reuse the last one) or
  ``per_element`` (Meta-SGD, Li et al. 2017: a learned rate per parameter element), each starting at ``inner_lr``
  and meta-learned with the initialisation;
- ``multi_step_loss`` (MAML++'s MSL): the meta-objective is the weighted sum of the query losses after every inner
  step, with the reference's annealing (``get_per_step_loss_importance_vector``): weights start uniform at 1/S; each
  epoch the non-final ones fall by 1/(S * msl_epochs) to a floor of 0.03/S and the final one rises to match; from
  epoch ``msl_epochs`` on, the final step's loss alone;
- the execution plan: ``plain`` (the model's own forward) or ``fast`` (``algorithms/fast_plan.py``: the same function
  and gradients, channels-last and max-pool before ReLU).

An epoch is ``epoch_iterations`` meta-iterations (the reference's ``total_iter_per_epoch``: 500); the runner tells
the learner the iteration through ``start_iteration``.

Gradients come from ``torch.autograd.grad`` rather than ``torch.func.grad``: the two compute the same thing, but
torch.func's grad transform refuses saved-tensor hooks, which is how every learner's memory is measured. ``vmap``
still batches the tasks' forward passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal

import torch
from torch import nn
from torch.func import vmap

from algorithms.base import StepResult
from algorithms.fast_plan import FastForward
from algorithms.inner_loop import InnerLoopConfig, InnerLoopLearner, stack_losses
from datasets.episode import Episode

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FunctionalConfig(InnerLoopConfig):
    """first_order: drop the second-order terms; first_order_epochs: first order for that many epochs, then second;
    fast_weights: "all" parameters or the classifier "head" alone in the inner loop; inner_rates: "fixed" inner_lr,
    learned "per_layer_step" (LSLR) or "per_element" (Meta-SGD); multi_step_loss, msl_epochs: MAML++'s annealed
    multi-step loss; epoch_iterations: meta-iterations per epoch; plan: "plain" or "fast" model execution (same
    gradients); task_batching: "loop" takes tasks one by one (one backward each), "vmap" batches ``vmap_chunk`` tasks
    per call (0: the whole meta-batch), "auto" picks by device from measurement: loop on CPU, vmap elsewhere."""

    first_order: bool = False
    first_order_epochs: int = 0
    fast_weights: Literal["all", "head"] = "all"
    inner_rates: Literal["fixed", "per_layer_step", "per_element"] = "fixed"
    multi_step_loss: bool = False
    msl_epochs: int = 15
    epoch_iterations: int = 500
    plan: Literal["plain", "fast"] = "plain"
    task_batching: Literal["auto", "loop", "vmap"] = "auto"
    vmap_chunk: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("msl_epochs", "epoch_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("first_order_epochs", "vmap_chunk"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.first_order and self.first_order_epochs:
            raise ValueError(f"first_order_epochs ({self.first_order_epochs}) anneals first order into second: with "
                             f"first_order true there is no second order to anneal to")


def step_loss_weights(steps: int, epoch: int, msl_epochs: int) -> list[float]:
    """MAML++'s per-step query-loss weights at ``epoch`` (Antoniou et al.'s reference schedule)."""
    decay, floor = 1.0 / steps / msl_epochs, 0.03 / steps
    weights = [max(1.0 / steps - epoch * decay, floor) for _ in range(steps - 1)]
    final = min(1.0 / steps + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return weights + [final]


def rate_key(name: str) -> str:
    return name.replace(".", "-")  # a ParameterDict key cannot hold a dot


class FunctionalLearner(InnerLoopLearner):
    """MAML and its family as options: order, fast weights, inner rates, multi-step loss, execution plan."""

    Config = FunctionalConfig

    def __init__(self, model, config, task):
        super().__init__(model, config, task)
        self.iteration = 0
        self.fast_forward = FastForward(model) if self.config.plan == "fast" else None
        self.rates = self._inner_rates()

    # --- what the options select -------------------------------------------------------------------------------
    def adapted_names(self) -> set[str]:
        if self.config.fast_weights == "head":
            return {name for name, _ in self.model.named_parameters() if name.startswith("head.")}
        return super().adapted_names()

    def _inner_rates(self) -> nn.ParameterDict | None:
        """The learned inner rates (meta-parameters) of the fast weights, or None for the fixed ``inner_lr``. Built
        from pairs: in the model's parameter order (a ParameterDict built from a dict sorts its keys)."""
        kind = self.config.inner_rates
        if kind == "fixed":
            return None
        fast, lr = self.adapted_names(), self.config.inner_lr
        initial = ((lambda p: p.new_full((max(self.config.inner_steps, 1),), lr)) if kind == "per_layer_step"
                   else (lambda p: torch.full_like(p, lr)))
        return nn.ParameterDict([(rate_key(name), nn.Parameter(initial(p)))
                                 for name, p in self.model.named_parameters() if name in fast])

    def _step(self, name: str, step: int, parameter: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Inner step ``step`` of one fast weight."""
        if self.rates is None:
            return parameter - self.config.inner_lr * grad
        rates = self.rates[rate_key(name)]
        if self.config.inner_rates == "per_layer_step":
            rates = rates[min(step, len(rates) - 1)]
        return parameter - rates * grad

    @property
    def epoch(self) -> int:
        return self.iteration // self.config.epoch_iterations

    @property
    def second_order(self) -> bool:
        return not self.config.first_order and self.epoch >= self.config.first_order_epochs

    def step_loss_weights(self) -> list[float] | None:
        """Weights of the query loss after each inner step in the meta-objective; None: the final step's alone."""
        steps = self.config.inner_steps
        if not self.config.multi_step_loss or steps == 0 or self.epoch >= self.config.msl_epochs:
            return None
        return step_loss_weights(steps, self.epoch, self.config.msl_epochs)

    def _model(self, batched: bool, differentiated_twice: bool = False) -> Callable[[Params, torch.Tensor],
                                                                                    torch.Tensor]:
        """The model as a function of a parameter dict, per task or vmapped over tasks. On the fast plan a graph
        differentiated twice (second-order inner steps) stays contiguous: its double backward (batch norm's above
        all) has no channels-last kernels on the CPU (1.21x slower at 5-way 1-shot S=1, 1.69x at 5-way 5-shot S=5,
        ``benchmarks/fast_route.py``)."""
        forward = self._forward
        if self.fast_forward is not None:
            forward = partial(self.fast_forward, in_channels_last=not differentiated_twice)
        return vmap(forward) if batched else forward

    def _forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        if self.fast_forward is not None:
            return self.fast_forward(params, x)
        return super()._forward(params, x)

    # --- the interface -----------------------------------------------------------------------------------------
    def meta_parameters(self) -> list[nn.Parameter]:
        return super().meta_parameters() + (list(self.rates.values()) if self.rates is not None else [])

    def state_dict(self) -> dict[str, torch.Tensor]:
        rates = {} if self.rates is None else {f"inner_rates.{k}": v for k, v in self.rates.state_dict().items()}
        return {**super().state_dict(), **rates}

    def start_iteration(self, iteration: int) -> None:
        self.iteration = iteration

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
        ``after_step(step, params)`` sees the weights after each step (the multi-step loss)."""
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

    def adapted_parameters(self, episode: Episode, steps: int) -> dict[str, torch.Tensor]:
        start = {name: p.detach().requires_grad_() for name, p in self.model.named_parameters()}
        losses_of = partial(self._loss, k_shot=self._k_shot(episode))
        adapted, _ = self._inner_loop(start, self._model(batched=False), losses_of, episode.support_x,
                                      episode.support_y, steps, create_graph=False)
        return {name: p.detach() for name, p in adapted.items()}

    def meta_gradient(self, batch: Episode) -> StepResult:
        tasks = len(batch)
        chunk = self._chunk(tasks, batch.query_x.device)
        theta = dict(self.model.named_parameters())
        task_loss_of = partial(self._loss, k_shot=self._k_shot(batch))
        second_order = self.second_order
        forward, inner_forward = self._model(bool(chunk)), self._model(bool(chunk), differentiated_twice=second_order)
        losses_of = vmap(task_loss_of) if chunk else task_loss_of
        weights = self.step_loss_weights()
        total, outputs, inner = 0.0, [], []
        for start in range(0, tasks, chunk or 1):
            if chunk:  # tasks [start, stop) at once: parameters gain a task dimension
                part = batch.tasks(start, min(start + chunk, tasks))
                size = len(part)
                params = {name: p.expand(size, *p.shape) for name, p in theta.items()}
            else:
                part, size, params = batch.task(start), 1, theta
            weighted, step_outputs = [], []

            def weigh_query_loss(step: int, fast: Params, part: Episode = part) -> None:
                step_outputs.append(forward(fast, part.query_x))
                weighted.append(weights[step] * losses_of(step_outputs[-1], part.query_y).sum())

            adapted, history = self._inner_loop(params, inner_forward, losses_of, part.support_x, part.support_y,
                                                self.config.inner_steps, second_order,
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
