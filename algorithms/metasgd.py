"""`metasgd`: Meta-SGD (Li et al. 2017): MAML with a learned inner step size per parameter element, meta-learned
with the initialisation. The rates start at ``inner_lr`` and are meta-parameters (the outer optimiser updates them);
second order by default (``first_order`` drops those terms)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from algorithms.base import register_learner
from algorithms.maml import MAML, MAMLConfig, rate_key


@dataclass(frozen=True)
class MetaSGDConfig(MAMLConfig):
    """inner_lr: where every learned rate starts; MAML++'s multi-step loss and derivative-order annealing apply."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lslr:
            raise ValueError("lslr must be false for metasgd: it learns a rate per element already")


@register_learner("metasgd")
class MetaSGD(MAML):
    """Meta-SGD: a learned inner learning rate per parameter element, second order (first_order option)."""

    Config = MetaSGDConfig

    def _inner_rates(self) -> nn.ParameterDict:
        return nn.ParameterDict([(rate_key(name), nn.Parameter(torch.full_like(p, self.config.inner_lr)))
                                 for name, p in self.model.named_parameters() if name in self.adapted_names()])

    def _step(self, name: str, step: int, parameter: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return parameter - self.rates[rate_key(name)] * grad
