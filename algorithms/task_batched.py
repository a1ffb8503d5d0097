"""Tasks batched by the model's own forward (``task_batching: bmm`` of the functional learner): for models made of
``Linear`` and ``ReLU`` layers (the sinusoid MLP of Finn et al.), T tasks run at once on per-task weight copies, one
``torch.baddbmm`` per layer, with no vmap.

It computes what ``vmap(functional_call(model, ...))`` computes (the gradient tests hold the two to float64
rounding), with fewer operators: for a small model vmap's per-operator batching costs more than the work (sinusoid
MLP, B=25, K=10, second order: 2.7 ms per meta-iteration under vmap, 1.3 ms for the same math written with
``baddbmm``, measured with ``benchmarks/table.py``'s sinusoid section on a 2-core CPU). Models of any other layer
are refused: ``supported`` says which, and the autotuner offers ``bmm`` only where it holds.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from meta_bench.algorithms.backbones import Classifier

Params = dict[str, torch.Tensor]


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The model's layers in forward order with their parameter prefixes, or None where its forward is not simply
    its leaf modules in registration order (a ``Classifier``: ``head(features(x))``)."""
    leaves = [(name, module) for name, module in model.named_modules() if not list(module.children())]
    if not all(isinstance(module, (nn.Linear, nn.ReLU)) for _, module in leaves):
        return None
    # the registration order is the forward order only for Sequential stacks and head(features(x))
    containers = [module for _, module in model.named_modules() if list(module.children())]
    if not all(isinstance(c, nn.Sequential) or _is_features_then_head(c) for c in containers):
        return None
    return leaves


def _is_features_then_head(module: nn.Module) -> bool:
    names = [name for name, _ in module.named_children()]
    return type(module) is Classifier and names == ["features", "head"]


def supported(model: nn.Module) -> bool:
    """Whether ``task_batched_forward`` can run ``model``: Linear and ReLU layers in Sequential stacks."""
    return _layers(model) is not None


def task_batched_forward(model: nn.Module) -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """``forward(params, x)``: ``params`` hold a leading task dimension ([T, out, in] weights, [T, out] biases) and
    ``x`` is [T, n, in]; returns [T, n, out]."""
    layers = _layers(model)
    if layers is None:
        kinds = sorted({type(m).__name__ for _, m in model.named_modules() if not list(m.children())})
        raise ValueError(f"task_batching 'bmm' runs models of Linear and ReLU layers only; this model has "
                         f"{', '.join(kinds)}: use 'loop', 'vmap' or 'auto'")

    def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
        for name, module in layers:
            if isinstance(module, nn.ReLU):
                x = torch.relu(x)
                continue
            weight = params[f"{name}.weight"].transpose(-1, -2)
            bias = params.get(f"{name}.bias")
            x = torch.bmm(x, weight) if bias is None else torch.baddbmm(bias.unsqueeze(-2), x, weight)
        return x

    return forward
