"""A suite's ``search`` section: the hyperparameter space `bench tune` explores, typed and validated whole before any
trial runs (a bad space is a bad suite: exit 2, nothing created in the study storage)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from bench.core.config import ConfigError, from_mapping
from bench.core.seeding import Seed

SECTIONS = ("learner", "training", "backbone")  # a parameter is "<section>.<option>"
OBJECTIVES = ("score", "ms_per_iteration")


@dataclass(frozen=True)
class ParamSpec:
    """A float or integer range (``low``, ``high``, ``log``, ``step``) or a categorical (``choices``). Integer
    ranges are those whose bounds (and step) are integers."""

    low: float | None = None  # a range's lower bound
    high: float | None = None  # a range's upper bound
    log: bool = False  # sample the range on a log scale
    step: float | None = None  # a range's step (integer bounds and step: an integer range)
    choices: tuple[bool | int | float | str, ...] | None = None  # a categorical's values (instead of a range)

    @property
    def integer(self) -> bool:
        bounds = (self.low, self.high) + ((self.step,) if self.step is not None else ())
        return self.choices is None and all(float(v).is_integer() for v in bounds)

    def check(self, where: str) -> None:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ConfigError(f"{where}: give either choices or a range (low, high, log, step), not both")
            if not self.choices:
                raise ConfigError(f"{where}: choices is empty; list at least one value")
            return
        if self.low is None or self.high is None:
            raise ConfigError(f"{where}: a range needs low and high (or give choices)")
        if self.low > self.high:
            raise ConfigError(f"{where}: low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, got low {self.low}")
        if self.step is not None:
            if self.log:
                raise ConfigError(f"{where}: a log range takes no step")
            if self.step <= 0:
                raise ConfigError(f"{where}: step must be positive, got {self.step}")
            count = (self.high - self.low) / self.step
            if not math.isclose(count, round(count), abs_tol=1e-9):
                raise ConfigError(f"{where}: step {self.step} does not divide the range [{self.low}, {self.high}]")

    def suggest(self, trial, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class SearchSpec:
    """objectives: "score" (the validation score of the learner's cell, maximised for accuracy and minimised for
    MSE) and optionally "ms_per_iteration" (minimised: a Pareto front); space: parameters tuned for every learner
    that has them; learners: per-learner spaces by label (added to the shared one); n_trials, timeout (seconds):
    the budget of each learner's study; pruner: "median" (stop a trial whose validation curve falls below the
    median of earlier trials) or "none"."""

    n_trials: int = 20  # trials per learner's study
    timeout: float | None = None  # seconds per learner's study (None: the trials alone bound it)
    seed: Seed = 0  # the sampler's seed (TPE): the same seed proposes the same trials
    objectives: tuple[str, ...] = ("score",)
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = 2  # trials run to the end before the median pruner stops any
    pruner_warmup_steps: int = 0  # validation passes of a trial before it may be pruned
    space: dict = field(default_factory=dict)
    learners: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_trials <= 0:
            raise ValueError(f"search.n_trials must be positive, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"search.timeout must be positive (or absent), got {self.timeout}")
        if not self.objectives or self.objectives[0] != "score" or len(self.objectives) > 2 or \
                any(o not in OBJECTIVES for o in self.objectives):
            raise ValueError(f"search.objectives must be [score] or [score, ms_per_iteration], got "
                             f"{list(self.objectives)}")


def parse_space(raw: Any, where: str) -> dict[str, ParamSpec]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of parameter -> range or choices")
    return {name: from_mapping(ParamSpec, spec, f"{where}.{name}") for name, spec in raw.items()}


def options_in(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of ``section`` among ``values`` (parameter -> value), by option: ``{"learner.inner_lr": 0.1,
    "training.lr": 0.01}`` holds ``{"inner_lr": 0.1}`` for "learner"."""
    prefix = f"{section}."
    return {name[len(prefix):]: value for name, value in values.items() if name.startswith(prefix)}


def space_of(search: SearchSpec, label: str, learner_options: list[str]) -> dict[str, ParamSpec]:
    """The space one learner is tuned over: the shared parameters it has, then its own."""
    space = parse_space(search.space, "search.space")
    lacks = {f"learner.{option}" for option in options_in("learner", space) if option not in learner_options}
    shared = {n: p for n, p in space.items() if n not in lacks}
    return {**shared, **parse_space(search.learners.get(label, {}), f"search.learners.{label}")}
