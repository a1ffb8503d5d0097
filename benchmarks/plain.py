"""Plain reference implementations: MAML and FOMAML the way a user writes them in an afternoon without this project
(a per-task loop over the meta-batch, one backward per task), so that the speed table measures "x faster than the
plain way" in the same run instead of quoting it. They compute the learners' meta-gradient (tested in float64:
``tests/algorithms/test_fast.py``) with the learners' defaults: mean cross-entropy, batch norm adapted, SGD inner loop.

For the sinusoid MLP, ``BatchedMLPMAML`` is the hand-written fast version instead: every task's weight copy in one
tensor, each layer one ``torch.baddbmm`` over the tasks, the mean squared error, first or second order: the floor
the learners' small-model path is held to.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F


class PlainDeepcopyFOMAML:
    """Per task: deepcopy the model, SGD on the copy's support loss, backward the copy's query loss, and add the
    copy's gradients into the model's (the step the textbook snippet forgets)."""

    order = "FOMAML"

    def __init__(self, model: nn.Module, inner_lr: float, steps: int):
        self.model, self.inner_lr, self.steps = model, inner_lr, steps

    def meta_gradient(self, support_x, support_y, query_x, query_y) -> None:
        tasks = len(support_x)
        for t in range(tasks):
            fast = copy.deepcopy(self.model)
            inner = torch.optim.SGD(fast.parameters(), lr=self.inner_lr)
            for _ in range(self.steps):
                inner.zero_grad()
                F.cross_entropy(fast(support_x[t]), support_y[t]).backward()
                inner.step()
            inner.zero_grad()
            (F.cross_entropy(fast(query_x[t]), query_y[t]) / tasks).backward()
            for p, q in zip(self.model.parameters(), fast.parameters()):
                p.grad = q.grad if p.grad is None else p.grad + q.grad


class PlainAutogradMAML:
    """Per task: fast weights from ``torch.autograd.grad`` steps on parameter dicts (``create_graph`` for second
    order; without it the inner gradients are constants and the query backward gives FOMAML's meta-gradient)."""

    def __init__(self, model: nn.Module, inner_lr: float, steps: int, second_order: bool):
        self.model, self.inner_lr, self.steps, self.second_order = model, inner_lr, steps, second_order
        self.order = "MAML" if second_order else "FOMAML"

    def meta_gradient(self, support_x, support_y, query_x, query_y) -> None:
        tasks = len(support_x)
        theta = dict(self.model.named_parameters())
        for t in range(tasks):
            fast = theta
            for _ in range(self.steps):
                loss = F.cross_entropy(functional_call(self.model, fast, (support_x[t],)), support_y[t])
                grads = torch.autograd.grad(loss, list(fast.values()), create_graph=self.second_order)
                fast = {name: p - self.inner_lr * g for (name, p), g in zip(fast.items(), grads)}
            (F.cross_entropy(functional_call(self.model, fast, (query_x[t],)), query_y[t]) / tasks).backward()


class BatchedMLPMAML:
    """(FO)MAML for an MLP of ``nn.Linear`` layers with ReLU between them (the sinusoid model: ``features`` then
    ``head``), all tasks at once: per-task weight copies [T, out, in] (expanded views of the meta-parameters), one
    ``torch.baddbmm`` per layer, the support gradients from one ``torch.autograd.grad`` over the summed per-task
    losses (``create_graph`` for second order), one backward of the mean query loss. Written for this benchmark
    alone; it shares no code with the learners."""

    def __init__(self, model: nn.Module, inner_lr: float, steps: int, second_order: bool):
        self.model, self.inner_lr, self.steps, self.second_order = model, inner_lr, steps, second_order
        self.order = "MAML" if second_order else "FOMAML"
        self.layers = [m for m in model.modules() if isinstance(m, nn.Linear)]

    def _forward(self, weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for i in range(0, len(weights), 2):
            x = torch.baddbmm(weights[i + 1].unsqueeze(1), x, weights[i].transpose(1, 2))
            if i + 2 < len(weights):
                x = x.relu()
        return x

    @staticmethod
    def _losses(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output - target).pow(2).mean(dim=(1, 2))  # one mean squared error per task

    def meta_gradient(self, support_x, support_y, query_x, query_y) -> None:
        tasks = len(support_x)
        weights = [t.expand(tasks, *t.shape) for layer in self.layers for t in (layer.weight, layer.bias)]
        for _ in range(self.steps):
            grads = torch.autograd.grad(self._losses(self._forward(weights, support_x), support_y).sum(), weights,
                                        create_graph=self.second_order)
            weights = [w - self.inner_lr * g for w, g in zip(weights, grads)]
        self._losses(self._forward(weights, query_x), query_y).mean().backward()


def batched_mlp_references(model: nn.Module, inner_lr: float, steps: int) -> dict[str, object]:
    return {f"hand-written batched {order}, baddbmm": BatchedMLPMAML(copy.deepcopy(model), inner_lr, steps, second)
            for order, second in (("FOMAML", False), ("MAML", True))}


def plain_references(model: nn.Module, inner_lr: float, steps: int) -> dict[str, object]:
    """Each reference on its own copy of ``model``, by the name the speed table prints."""
    return {"plain FOMAML, deepcopy loop": PlainDeepcopyFOMAML(copy.deepcopy(model), inner_lr, steps),
            "plain FOMAML, autograd.grad loop": PlainAutogradMAML(copy.deepcopy(model), inner_lr, steps, False),
            "plain MAML, autograd.grad loop": PlainAutogradMAML(copy.deepcopy(model), inner_lr, steps, True)}
