"""The fast execution plan (``plan: fast`` of the functional learner; the presets `fomaml/fast` and `maml/fast`): the
model run through a plan that computes the same function and the same gradients (``bench verify`` and the oracle
test prove it).

What was measured on a 2-core CPU before choosing it (``benchmarks/batched_route.py``,
``docs/measurements/batched_route_cpu_2core.txt``): running all tasks of a meta-batch together loses (the query
pass, ~90% of a 5-way 1-shot meta-step: 0.5x grouped, 0.26x unfold + bmm, 0.54x one shared convolution; the
support steps alone under vmap 1.13x slower at 5-way 1-shot S=1 and 2.9x at 5-way 5-shot S=5,
``benchmarks/fast_route.py``), so tasks stay one by one on the CPU. What pays is making each task's pass cheaper,
exactly:

- channels-last activations and kernels: oneDNN convolutions and max-pool run without reordering their inputs;
- max-pool before ReLU: ``relu(max_pool(x)) == max_pool(relu(x))`` (ReLU is monotone; where a window's maximum is
  not positive both give 0 with a zero gradient), with ReLU on a quarter of the elements, forward and backward.

On other devices ``task_batching: auto`` keeps vmap over the meta-batch (launch-bound: one pass for all tasks); the
plan runs under vmap too, without the channels-last copy (a vmapped tensor has no memory format of its own).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch._C._functorch import is_batchedtensor
from torch.func import functional_call
from torch.nn import functional as F

from meta_bench.algorithms.backbones import Classifier

Params = dict[str, torch.Tensor]
Layout = Callable[[torch.Tensor], torch.Tensor]
Step = Callable[[Params, torch.Tensor, Layout], torch.Tensor]


def channels_last(tensor: torch.Tensor) -> torch.Tensor:
    """Images and convolution kernels in channels-last memory format (a differentiable copy); others unchanged.
    Kernels too: a channels-last kernel is what makes oneDNN keep its output channels-last."""
    if tensor.dim() != 4 or is_batchedtensor(tensor):
        return tensor
    return tensor.contiguous(memory_format=torch.channels_last)


def as_given(tensor: torch.Tensor) -> torch.Tensor:
    """The layout tensors already have: contiguous, as the model's own forward runs."""
    return tensor


def _leaf(module: nn.Module, prefix: str) -> Step:
    names = {f"{prefix}{name}": name for name, _ in module.named_parameters()}

    def step(params: Params, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        # outputs too: a convolution over one input channel (the images) comes out contiguous otherwise
        return layout(functional_call(module, {local: layout(params[name]) for name, local in names.items()}, (x,)))
    return step


def _pool_then_relu(pool: nn.MaxPool2d) -> Step:
    def step(params: Params, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        return F.relu(pool(x))
    return step


def plan(module: nn.Module, prefix: str = "") -> list[Step]:
    """``module``'s forward as a list of steps over a parameter dict, with every ReLU directly followed by a
    max-pool swapped with it."""
    if isinstance(module, Classifier):  # forward: head(features(x))
        return plan(module.features, f"{prefix}features.") + plan(module.head, f"{prefix}head.")
    if not isinstance(module, nn.Sequential):
        return [_leaf(module, prefix)]
    children, steps, i = list(module.named_children()), [], 0
    while i < len(children):
        name, child = children[i]
        following = children[i + 1][1] if i + 1 < len(children) else None
        if isinstance(child, nn.ReLU) and isinstance(following, nn.MaxPool2d):
            steps.append(_pool_then_relu(following))
            i += 2
        else:
            steps.extend(plan(child, f"{prefix}{name}."))
            i += 1
    return steps


class FastForward:
    """``model(x)`` for a parameter dict, through ``plan(model)``, in channels-last memory format unless told
    otherwise."""

    def __init__(self, model: nn.Module):
        self.steps = plan(model)

    def __call__(self, params: Params, x: torch.Tensor, in_channels_last: bool = True) -> torch.Tensor:
        layout = channels_last if in_channels_last else as_given
        x = layout(x)
        for step in self.steps:
            x = step(params, x, layout)
        return x
