"""`metasgd`: Meta-SGD (Li et al. 2017): MAML with a learned inner step size per parameter element, meta-learned
with the initialisation. The rates start at ``inner_lr`` and are meta-parameters (the outer optimiser updates them);
second order by default (``first_order`` drops those terms)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

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

    def _learns_rates(self) -> bool:
        return True

    def _initial_rates(self, parameter: torch.Tensor) -> torch.Tensor:
        return torch.full_like(parameter, self.config.inner_lr)  # one rate per element, the same at every step

    def _rate(self, name: str, step: int) -> torch.Tensor:
        return self.rates[rate_key(name)]
