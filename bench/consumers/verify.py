"""`bench verify`: variants of one algorithm must give the same meta-gradient; second-order learners must match
finite differences. Run on small float64 problems; a user who adds a variant runs this."""
from __future__ import annotations

import itertools

import torch

from bench.run.problems import Problem
from meta_bench.algorithms import LEARNERS
from meta_bench.algorithms.base import algorithm_of
from meta_bench.datasets import Episode

CASES = (Problem("glyphs", 5, 1, query=2, tasks=2, filters=16), Problem("sinusoid", 1, 5, query=5, tasks=3, filters=16))
KIND = {"glyphs": "classification", "sinusoid": "regression"}  # the task kind of each case's dataset


def learns(name: str, case: Problem) -> bool:
    return KIND[case.dataset] in LEARNERS[name].kinds


def families(extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Algorithm -> its implementations, where it has more than one: the registered and installed learners and
    ``extra`` (plugins named by import path)."""
    grouped: dict[str, list[str]] = {}
    for name in dict.fromkeys([*LEARNERS.names(), *extra]):
        grouped.setdefault(algorithm_of(name), []).append(name)
    return {a: names for a, names in grouped.items() if len(names) > 1}


def meta_gradient(name: str, options: dict, case: Problem) -> torch.Tensor:
    """The float64 meta-gradient over every model parameter, zeros where a learner leaves one out (ProtoNet's
    head)."""
    learner = case.learner(name, torch.float64, **accepted(name, options))
    learner.meta_gradient(case.batch(dtype=torch.float64))
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in learner.model.parameters()])


def accepted(name: str, options: dict) -> dict:
    """The options ``name``'s config has (ProtoNet's has no inner loop)."""
    return {key: value for key, value in options.items() if key in LEARNERS[name].Config.__dataclass_fields__}


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(a.norm(), b.norm(), torch.finfo(a.dtype).tiny))


def agreement(names: list[str], options: dict, case: Problem) -> list[tuple[str, str, float]]:
    grads = {name: meta_gradient(name, options, case) for name in names}
    return [(a, b, relative_difference(grads[a], grads[b])) for a, b in itertools.combinations(names, 2)]


def finite_difference_error(name: str, options: dict, case: Problem, directions: int = 3, eps: float = 1e-6) -> float:
    """Largest error of <meta-gradient, v> against the central difference of the post-adaptation query loss along
    unit directions v (the gradient's own and random ones), relative to the gradient's norm: a random direction in
    thousands of dimensions sees a tiny slope, which rounding would swamp if the error were taken relative to it."""
    batch = case.batch(dtype=torch.float64)
    # Rendered glyphs have exact ties (flat black background), which make max-pool exactly non-differentiable;
    # a little noise on the inputs restores a point where the gradient exists and finite differences can agree.
    noise = torch.Generator().manual_seed(2)
    batch = Episode(batch.support_x + 1e-2 * torch.randn(batch.support_x.shape, generator=noise, dtype=torch.float64),
                    batch.support_y,
                    batch.query_x + 1e-2 * torch.randn(batch.query_x.shape, generator=noise, dtype=torch.float64),
                    batch.query_y, batch.classes)
    learner = case.learner(name, torch.float64, **accepted(name, options))
    learner.meta_gradient(batch)
    params = list(learner.model.parameters())
    grad = torch.cat([p.grad.flatten() for p in params])
    theta = torch.cat([p.detach().flatten() for p in params])
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for d in range(directions):
        v = grad.clone() if d == 0 else torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
        v /= v.norm()
        values = []
        for sign in (1.0, -1.0):
            torch.nn.utils.vector_to_parameters(theta + sign * eps * v, params)
            values.append(learner.meta_gradient(batch).loss)
        numeric = (values[0] - values[1]) / (2 * eps)
        worst = max(worst, float((grad @ v - numeric).abs() / grad.norm()))
    torch.nn.utils.vector_to_parameters(theta, params)
    return worst


def is_second_order(name: str) -> bool:
    """Differentiates through adaptation by default: a `first_order` option that is off."""
    return getattr(LEARNERS[name].Config(), "first_order", True) is False


def second_order_learners(extra: tuple[str, ...] = ()) -> list[str]:
    return [name for name in dict.fromkeys([*LEARNERS.names(), *extra]) if is_second_order(name)]


def run_checks(tolerance: float = 1e-6, echo=print, extra: tuple[str, ...] = ()) -> bool:
    """Every family's agreement and every second-order learner's finite differences; ``extra`` adds learners named
    by import path to the registered and installed ones."""
    ok = True
    for algorithm, names in sorted(families(tuple(extra)).items()):
        for case, steps in itertools.product(CASES, (1, 3)):
            if len(here := [name for name in names if learns(name, case)]) < 2:
                continue
            options = {"inner_steps": steps, "inner_lr": 0.4 if case.dataset == "glyphs" else 0.01}
            for a, b, rel in agreement(here, options, case):
                verdict = "ok" if rel <= tolerance else "DISAGREE"
                ok &= rel <= tolerance
                echo(f"{algorithm:8s} {case.dataset:9s} S={steps}  {a:20s} vs {b:20s} max rel diff {rel:.2e}  "
                     f"{verdict}")
    for name in second_order_learners(tuple(extra)):
        for case in [case for case in CASES if learns(name, case)]:
            options = {"inner_steps": 2, "inner_lr": 0.4 if case.dataset == "glyphs" else 0.01}
            rel = finite_difference_error(name, options, case)
            verdict = "ok" if rel <= tolerance else "MISMATCH"
            ok &= rel <= tolerance
            echo(f"{name:8s} {case.dataset:9s} S=2  meta-gradient vs central finite differences: rel diff {rel:.2e}  "
                 f"{verdict}")
    return ok
