"""What a trial trains: the learner's search space, and the suite's first grid cell with the sampled values applied."""
from __future__ import annotations

import dataclasses
from typing import Any

from bench.core.config import field_names
from bench.spec.search import ParamSpec, options_in, space_of
from bench.spec.suite import Suite, expand
from meta_bench.algorithms import LEARNERS


def learner_space(suite: Suite, label: str) -> dict[str, ParamSpec]:
    spec = next(s for s in suite.learners if s.display == label)
    return space_of(suite.search, label, field_names(LEARNERS[spec.name].Config))


def configured(suite: Suite, label: str, values: dict[str, Any]) -> Suite:
    """The suite narrowed to one learner with ``values`` ("section.option" -> value) applied."""
    spec = next(s for s in suite.learners if s.display == label)
    return dataclasses.replace(
        suite, learners=(dataclasses.replace(spec, config={**spec.config, **options_in("learner", values)}),),
        training=dataclasses.replace(suite.training, **options_in("training", values)),
        backbone=dataclasses.replace(suite.backbone, **options_in("backbone", values)))


def trial_cell(suite: Suite, label: str, values: dict[str, Any]):
    """The cell a trial trains: the learner's first grid point (first N, K, device and seed), no swept options."""
    narrowed = configured(suite, label, values)
    grid = narrowed.grid
    narrowed = dataclasses.replace(narrowed, grid=dataclasses.replace(
        grid, n_way=grid.n_way[:1], k_shot=grid.k_shot[:1], devices=grid.devices[:1], seeds=grid.seed_values[:1],
        options={}))
    return expand(narrowed)[0]
