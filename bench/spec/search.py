"""A suite's ``search`` section: the hyperparameter space `bench tune` explores, typed and validated whole before any
trial runs (a bad space is a bad suite: exit 2, nothing created in the study storage)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from bench.core.config import ConfigError, field_names, from_mapping
from bench.core.registry import did_you_mean
from bench.core.seeding import Seed

if TYPE_CHECKING:
    from bench.spec.suite import Suite

SECTIONS = ("learner", "training", "backbone")  # a parameter is "<section>.<option>"
OBJECTIVES = ("score", "ms_per_iteration")


@dataclass(frozen=True)
class ParamSpec:
    """A float or integer range (``low``, ``high``, ``log``, ``step``) or a categorical (``choices``). Integer
    ranges are those whose bounds (and step) are integers."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[bool | int | float | str, ...] | None = None

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

    n_trials: int = 20
    timeout: float | None = None
    seed: Seed = 0
    objectives: tuple[str, ...] = ("score",)
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = 2
    pruner_warmup_steps: int = 0
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


def space_of(search: SearchSpec, label: str, learner_options: list[str]) -> dict[str, ParamSpec]:
    """The space one learner is tuned over: the shared parameters it has, then its own."""
    shared = {n: p for n, p in parse_space(search.space, "search.space").items()
              if not n.startswith("learner.") or n.split(".", 1)[1] in learner_options}
    return {**shared, **parse_space(search.learners.get(label, {}), f"search.learners.{label}")}


def validate_search(suite: Suite, source: str) -> None:
    """Every parameter names an option that exists, every range and choice is well formed."""
    from algorithms import LEARNERS  # noqa: PLC0415
    from algorithms.backbones import BackboneConfig  # noqa: PLC0415
    from bench.spec.suite import TrainingSpec  # noqa: PLC0415

    search = suite.search
    labels = {spec.label or spec.name: spec.name for spec in suite.learners}
    own = {label: field_names(LEARNERS[name].Config) for label, name in labels.items()}
    known = {"training": field_names(TrainingSpec), "backbone": [f.name for f in fields(BackboneConfig)]}
    unknown_labels = set(search.learners) - set(labels)
    if unknown_labels:
        raise ConfigError(f"{source}: search.learners: no learner is labelled {sorted(unknown_labels)[0]!r}; labels: "
                          f"{', '.join(labels)}")
    spaces = [("search.space", search.space, None)] + [(f"search.learners.{label}", raw, label)
                                                       for label, raw in search.learners.items()]
    for where, raw, label in spaces:
        for name, spec in parse_space(raw, f"{source}: {where}").items():
            here = f"{source}: {where}.{name}"
            section, _, option = name.partition(".")
            if section not in SECTIONS or not option:
                raise ConfigError(f"{here}: a parameter is <section>.<option> with section one of "
                                  f"{', '.join(SECTIONS)}")
            if section == "learner":
                options = own[label] if label else sorted({o for names in own.values() for o in names})
                if option not in options:
                    who = f"learner {label!r} has no option" if label else "no learner of this suite has the option"
                    raise ConfigError(f"{here}: {who} {option!r}{did_you_mean(option, options)}; options: "
                                      f"{', '.join(options)}")
            elif option not in known[section]:
                raise ConfigError(f"{here}: {section} has no option {option!r}{did_you_mean(option, known[section])}; "
                                  f"known: {', '.join(known[section])}")
            spec.check(here)
