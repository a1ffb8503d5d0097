"""Plain reference implementations: MAML and FOMAML the way a user writes them in an afternoon without this project
(a per-task loop over the meta-batch, one backward per task), so that the speed table measures "x faster than the
plain way" in the same run instead of quoting it. They compute the learners' meta-gradient (tested in float64:
``tests/algorithms/test_fast.py``) with the learners' defaults: mean cross-entropy, batch norm adapted, SGD inner loop.
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


def plain_references(model: nn.Module, inner_lr: float, steps: int) -> dict[str, object]:
    """Each reference on its own copy of ``model``, by the name the speed table prints."""
    return {"plain FOMAML, deepcopy loop": PlainDeepcopyFOMAML(copy.deepcopy(model), inner_lr, steps),
            "plain FOMAML, autograd.grad loop": PlainAutogradMAML(copy.deepcopy(model), inner_lr, steps, False),
            "plain MAML, autograd.grad loop": PlainAutogradMAML(copy.deepcopy(model), inner_lr, steps, True)}
