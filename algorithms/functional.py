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
  and gradients, channels-last and max-pool before ReLU);
- the task batching: tasks one by one (``loop``), ``vmap`` over tasks, or ``bmm`` (``algorithms/task_batched.py``:
  Linear/ReLU models run on per-task weight copies by batched matrix products); ``auto`` leaves the choice to the
  harness, which times the candidates (``execution_candidates``) on the cell's own shapes and calls
  ``use_execution`` (``bench/run/autotune.py``); without that, loop on the CPU and vmap elsewhere.

An epoch is ``epoch_iterations`` meta-iterations (the reference's ``total_iter_per_epoch``: 500); the runner tells
the learner the iteration through ``start_iteration``.

Gradients come from ``torch.autograd.grad`` rather than ``torch.func.grad``: the two compute the same thing, but
torch.func's grad transform refuses saved-tensor hooks, which is how every learner's memory is measured. ``vmap``
still batches the tasks' forward passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Literal

import torch
from torch import nn
from torch.func import vmap

from meta_bench.algorithms.base import StepResult, task_losses
from meta_bench.algorithms.fast_plan import FastForward
from meta_bench.algorithms.inner_loop import InnerLoopConfig, InnerLoopLearner, stack_losses
from meta_bench.algorithms.task_batched import supported, task_batched_forward
from meta_bench.datasets.episode import Episode

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FunctionalConfig(InnerLoopConfig):
    """first_order: drop the second-order terms; first_order_epochs: first order for that many epochs, then second;
    fast_weights: "all" parameters or the classifier "head" alone in the inner loop; inner_rates: "fixed" inner_lr,
    learned "per_layer_step" (LSLR) or "per_element" (Meta-SGD); multi_step_loss, msl_epochs: MAML++'s annealed
    multi-step loss; epoch_iterations: meta-iterations per epoch; plan: "plain" or "fast" model execution (same
    gradients); task_batching: "loop" takes tasks one by one (one backward each), "vmap" batches ``vmap_chunk`` tasks
    per call (0: the whole meta-batch), "bmm" likewise through batched matrix products (Linear/ReLU models, plain
    plan), "auto" lets the harness time the candidates on the cell's shapes and take the fastest."""

    first_order: bool = False
    first_order_epochs: int = 0
    fast_weights: Literal["all", "head"] = "all"
    inner_rates: Literal["fixed", "per_layer_step", "per_element"] = "fixed"
    multi_step_loss: bool = False
    msl_epochs: int = 15
    epoch_iterations: int = 500
    plan: Literal["plain", "fast"] = "plain"
    task_batching: Literal["auto", "loop", "vmap", "bmm"] = "auto"
    vmap_chunk: int = 0  # tasks per vmap call under task_batching vmap (0: all at once)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("msl_epochs", "epoch_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("first_order_epochs", "vmap_chunk"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.task_batching == "bmm" and self.plan != "plain":
            raise ValueError(f"task_batching 'bmm' is its own execution of the model: it takes plan 'plain', got "
                             f"{self.plan!r}")
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
        self.fast_names = self.adapted_names()  # fixed for the learner's life: not walked again every step
        bmm = self.config.task_batching == "bmm" or (self.config.task_batching == "auto" and self.config.plan == "plain"
                                                   and supported(model))
        self.batched_forward = task_batched_forward(model) if bmm else None  # refuses a model it cannot run
        self.chosen: dict[str, str] | None = None  # what the harness chose for task_batching "auto"

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
            return torch.add(parameter, grad, alpha=-self.config.inner_lr)  # one operator, not two
        rates = self.rates[rate_key(name)]
        if self.config.inner_rates == "per_layer_step":
            rates = rates[min(step, len(rates) - 1)]
        return parameter - rates * grad

    @property
    def epoch(self) -> int:
        return self.iteration // self.config.epoch_iterations

    @property
    def second_order(self) -> bool:
        return self._second_order(self.epoch)

    def _second_order(self, epoch: int) -> bool:
        return not self.config.first_order and epoch >= self.config.first_order_epochs

    def _multi_step(self, epoch: int) -> bool:
        return self.config.multi_step_loss and self.config.inner_steps > 0 and epoch < self.config.msl_epochs

    def step_loss_weights(self) -> list[float] | None:
        """Weights of the query loss after each inner step in the meta-objective; None: the final step's alone."""
        if not self._multi_step(self.epoch):
            return None
        return step_loss_weights(self.config.inner_steps, self.epoch, self.config.msl_epochs)

    def execution_phase(self, iteration: int) -> str:
        """The order of differentiation and whether every step's query graph is kept (the multi-step loss): second
        order and the multi-step loss hold more graph, so an execution that fitted before may not fit after."""
        epoch = iteration // self.config.epoch_iterations
        order = "second order" if self._second_order(epoch) else "first order"
        return order + (", multi-step loss" if self._multi_step(epoch) else "")

    def _model(self, mode: str, differentiated_twice: bool = False) -> Callable[[Params, torch.Tensor],
                                                                                torch.Tensor]:
        """The model as a function of a parameter dict, per task (``loop``) or over tasks. On the fast plan a graph
        differentiated twice (second-order inner steps) stays contiguous: its double backward (batch norm's above
        all) has no channels-last kernels on the CPU (1.21x slower at 5-way 1-shot S=1, 1.69x at 5-way 5-shot S=5,
        ``benchmarks/fast_route.py``)."""
        if mode == "bmm":
            return self.batched_forward
        forward = self._forward
        if self.fast_forward is not None:
            forward = partial(self.fast_forward, in_channels_last=not differentiated_twice)
        return vmap(forward) if mode == "vmap" else forward

    def _losses_of(self, mode: str, k_shot: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The support or query loss: a scalar per task in a loop, a [T] vector over a batch of tasks."""
        if mode == "loop":
            return partial(self._loss, k_shot=k_shot)
        per_class = k_shot if self.config.loss_reduction == "sum_over_k" else None
        return partial(task_losses, self.task.kind, per_class=per_class)

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

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        prefix = "inner_rates."
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)})
        if self.rates is not None:
            self.rates.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def start_iteration(self, iteration: int) -> None:
        self.iteration = iteration

    def _batching(self, tasks: int, device: torch.device) -> tuple[str, int]:
        """How a batch of ``tasks`` runs: (mode, tasks per pass); mode "loop" (one task per pass), "vmap" or "bmm"."""
        mode, chunk = self.config.task_batching, self.config.vmap_chunk
        if mode == "auto":
            if self.chosen is not None:
                mode, chunk = self.chosen["task_batching"], int(self.chosen["vmap_chunk"])
            else:  # nothing measured (a learner used outside the runner): what measured best for Conv-4
                mode = "loop" if device.type == "cpu" else "vmap"
        return (mode, 1) if mode == "loop" else (mode, min(chunk or tasks, tasks))

    def execution(self, tasks: int, device: torch.device) -> dict[str, str]:
        mode, chunk = self._batching(tasks, device)
        return {"task_batching": mode, "vmap_chunk": "0" if mode == "loop" else str(chunk)}

    def execution_candidates(self, tasks: int, device: torch.device) -> list[dict[str, str]]:
        """With task_batching "auto": every exact way to run ``tasks`` tasks (the same meta-gradient, rounding
        apart): the loop, vmap over the whole batch and over quarters of it (or over ``vmap_chunk`` where set), and
        bmm where the model allows it."""
        if self.config.task_batching != "auto":
            return []
        chunks = [self.config.vmap_chunk] if self.config.vmap_chunk else sorted({tasks, max(2, -(-tasks // 4))})
        candidates = [{"task_batching": "loop", "vmap_chunk": "0"}]
        candidates += [{"task_batching": "vmap", "vmap_chunk": str(c)} for c in chunks if c <= tasks and tasks > 1]
        if self.batched_forward is not None:
            candidates.append({"task_batching": "bmm", "vmap_chunk": str(min(chunks[-1], tasks))})
        return candidates

    def use_execution(self, choice: dict[str, str]) -> None:
        if self.config.task_batching != "auto":
            raise ValueError(f"task_batching is {self.config.task_batching!r}, set by the config: never overridden")
        if choice["task_batching"] == "bmm" and self.batched_forward is None:
            raise ValueError("task_batching 'bmm' cannot run this model")
        self.chosen = dict(choice)

    def _inner_loop(self, params: Params, forward: Callable, losses_of: Callable, x: torch.Tensor, y: torch.Tensor,
                    steps: int, create_graph: bool, after_step: Callable[[int, Params], None] | None = None
                    ) -> tuple[Params, list[torch.Tensor]]:
        """``steps`` SGD steps on the support loss over the fast weights: a pure function of ``params``;
        ``after_step(step, params)`` sees the weights after each step (the multi-step loss)."""
        history, fast = [], self.fast_names
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
        adapted, _ = self._inner_loop(start, self._model("loop"), self._losses_of("loop", self._k_shot(episode)),
                                      episode.support_x, episode.support_y, steps, create_graph=False)
        return {name: p.detach() for name, p in adapted.items()}

    def _task_parts(self, batch: Episode, mode: str, chunk: int, theta: Params) -> Iterator[tuple[Episode, Params]]:
        """The batch in the passes ``mode`` runs it in, each with the parameters it starts from: ``theta`` itself for
        one task of a loop, ``theta`` with a task dimension (expanded) for a chunk of tasks."""
        for first in range(0, len(batch), chunk):
            if mode == "loop":
                yield batch.task(first), theta
            else:
                part = batch if chunk >= len(batch) else batch.tasks(first, min(first + chunk, len(batch)))
                yield part, {name: p.expand(len(part), *p.shape) for name, p in theta.items()}

    def _adapt(self, batch: Episode, steps: int, every_step: bool) -> torch.Tensor:
        """Test-time adaptation of every episode, batched as meta-training runs: the query outputs after ``steps``
        inner steps [T, ...], or with ``every_step`` before the first step and after each [steps + 1, T, ...]."""
        mode, chunk = self._batching(len(batch), batch.query_x.device)
        forward, losses_of = self._model(mode), self._losses_of(mode, self._k_shot(batch))
        theta = {name: p.detach() for name, p in self.model.named_parameters()}
        passes = []
        for part, start in self._task_parts(batch, mode, chunk, theta):
            start = {name: p.requires_grad_() for name, p in start.items()}
            outputs: list[torch.Tensor] = []

            def record(step: int, params: Params, part: Episode = part, outputs: list = outputs) -> None:
                with torch.no_grad():
                    outputs.append(forward(params, part.query_x))

            if every_step:
                record(-1, start)
            adapted, _ = self._inner_loop(start, forward, losses_of, part.support_x, part.support_y, steps,
                                          create_graph=False, after_step=record if every_step else None)
            if not every_step:
                record(steps, adapted)
            curve = torch.stack(outputs)
            passes.append(curve.unsqueeze(1) if mode == "loop" else curve)
        curves = torch.cat(passes, dim=1)
        return curves if every_step else curves[-1]

    def predict_batch(self, batch: Episode) -> torch.Tensor:
        """Every episode adapted at once (vmap or bmm, as meta-training runs), ``vmap_chunk`` episodes per pass."""
        return self._adapt(batch, self.config.eval_inner_steps, every_step=False)

    def predict_curve(self, batch: Episode, steps: int) -> torch.Tensor:
        """Every episode's query outputs before the first inner step and after each, from one adaptation."""
        return self._adapt(batch, steps, every_step=True)

    def meta_gradient(self, batch: Episode) -> StepResult:
        tasks = len(batch)
        mode, chunk = self._batching(tasks, batch.query_x.device)
        theta = dict(self.model.named_parameters())
        second_order = self.second_order
        forward, inner_forward = self._model(mode), self._model(mode, differentiated_twice=second_order)
        losses_of = self._losses_of(mode, self._k_shot(batch))
        weights = self.step_loss_weights()
        total, outputs, inner = 0.0, [], []
        for part, params in self._task_parts(batch, mode, chunk, theta):
            size = 1 if mode == "loop" else len(part)
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
            outputs.append(output.detach().reshape(size, *output.shape[-2:]))
            steps = stack_losses(history, output)
            inner.append(steps.reshape(len(history), -1).sum(dim=1) if history else steps)
        return self._result(total / tasks, torch.cat(outputs), batch, torch.stack(inner).sum(dim=0) / tasks)
