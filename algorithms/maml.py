"""`maml`: full second-order MAML (Finn et al. 2017), differentiating through every inner step."""
from __future__ import annotations

from dataclasses import dataclass

from algorithms.base import register_learner
from algorithms.fomaml_functional import FunctionalConfig, FunctionalFOMAML


@dataclass(frozen=True)
class MAMLConfig(FunctionalConfig):
    """first_order: drop the second-order terms (then equal to fomaml/functional)."""

    first_order: bool = False


@register_learner("maml")
class MAML(FunctionalFOMAML):
    """Second-order MAML: backpropagates through the inner steps (create_graph), tasks looped or vmapped."""

    Config = MAMLConfig

    @property
    def second_order(self) -> bool:
        return not self.config.first_order
