"""`maml`: full second-order MAML (Finn et al. 2017), differentiating through every inner step, with the MAML++
options of Antoniou et al. 2019 (each off by default, each an ablation axis a suite can sweep):

- ``multi_step_loss`` (MSL): the meta-objective is the weighted sum of the query losses after every inner step, with
  the reference code's annealing (``get_per_step_loss_importance_vector``): weights start uniform at 1/S; each epoch
  the non-final ones fall by 1/(S * msl_epochs) to a floor of 0.03/S and the final one rises to match; from epoch
  ``msl_epochs`` on, the final step's loss alone (as the reference does).
- ``lslr`` (LSLR): a learned inner learning rate per fast-weight tensor ("layer") and per step, starting at
  ``inner_lr``, meta-learned with the initialisation. Test-time steps beyond the trained ones reuse the last
  trained step's rate.
- ``first_order_epochs`` (derivative-order annealing): first order for the first E epochs, second order after. The
  reference's ``first_order_to_second_order_epoch: e`` (second order once ``epoch > e``) is E = e + 1.

An epoch is ``epoch_iterations`` meta-iterations (the reference's ``total_iter_per_epoch``: 500); the runner tells
the learner the iteration through ``start_iteration``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from algorithms.base import register_learner
from algorithms.fomaml_functional import FunctionalConfig, FunctionalFOMAML


@dataclass(frozen=True)
class MAMLConfig(FunctionalConfig):
    """first_order: drop the second-order terms (then equal to fomaml/functional). MAML++ options: multi_step_loss,
    msl_epochs (epochs of annealed multi-step loss), lslr (learned per-layer per-step inner lrs),
    first_order_epochs (derivative-order annealing), epoch_iterations (meta-iterations per epoch)."""

    first_order: bool = False
    multi_step_loss: bool = False
    msl_epochs: int = 15
    lslr: bool = False
    first_order_epochs: int = 0
    epoch_iterations: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("msl_epochs", "epoch_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.first_order_epochs < 0:
            raise ValueError(f"first_order_epochs must be >= 0, got {self.first_order_epochs}")


def step_loss_weights(steps: int, epoch: int, msl_epochs: int) -> list[float]:
    """MAML++'s per-step query-loss weights at ``epoch`` (Antoniou et al.'s reference schedule)."""
    decay, floor = 1.0 / steps / msl_epochs, 0.03 / steps
    weights = [max(1.0 / steps - epoch * decay, floor) for _ in range(steps - 1)]
    final = min(1.0 / steps + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return weights + [final]


def rate_key(name: str) -> str:
    return name.replace(".", "-")  # a ParameterDict key cannot hold a dot


@register_learner("maml")
class MAML(FunctionalFOMAML):
    """Second-order MAML (tasks looped or vmapped), with the MAML++ options MSL, LSLR and derivative-order annealing."""

    Config = MAMLConfig

    def __init__(self, model, config, task):
        super().__init__(model, config, task)
        self.iteration = 0
        self.rates = self._inner_rates()

    def _inner_rates(self) -> nn.ParameterDict | None:
        """The learned inner learning rates (meta-parameters) of the fast weights, or None for the fixed
        ``inner_lr``. Built from pairs: in the model's parameter order (a ParameterDict built from a dict sorts its
        keys)."""
        if not self._learns_rates():
            return None
        fast = self.adapted_names()
        return nn.ParameterDict([(rate_key(name), nn.Parameter(self._initial_rates(p)))
                                 for name, p in self.model.named_parameters() if name in fast])

    def _learns_rates(self) -> bool:
        return self.config.lslr

    def _initial_rates(self, parameter: torch.Tensor) -> torch.Tensor:
        """LSLR: one rate per inner step for the whole tensor."""
        return parameter.new_full((max(self.config.inner_steps, 1),), self.config.inner_lr)

    def _rate(self, name: str, step: int) -> torch.Tensor:
        rates = self.rates[rate_key(name)]
        return rates[min(step, len(rates) - 1)]

    def meta_parameters(self) -> list[nn.Parameter]:
        return super().meta_parameters() + (list(self.rates.values()) if self.rates is not None else [])

    def state_dict(self) -> dict[str, torch.Tensor]:
        rates = {} if self.rates is None else {f"inner_rates.{k}": v for k, v in self.rates.state_dict().items()}
        return {**super().state_dict(), **rates}

    def start_iteration(self, iteration: int) -> None:
        self.iteration = iteration

    @property
    def epoch(self) -> int:
        return self.iteration // self.config.epoch_iterations

    @property
    def second_order(self) -> bool:
        return not self.config.first_order and self.epoch >= self.config.first_order_epochs

    def _step(self, name: str, step: int, parameter: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.rates is None:
            return super()._step(name, step, parameter, grad)
        return parameter - self._rate(name, step) * grad

    def _step_loss_weights(self) -> list[float] | None:
        steps = self.config.inner_steps
        if not self.config.multi_step_loss or steps == 0 or self.epoch >= self.config.msl_epochs:
            return None
        return step_loss_weights(steps, self.epoch, self.config.msl_epochs)
