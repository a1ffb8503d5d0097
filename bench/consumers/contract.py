"""`bench check-learner NAME`: the contract every learner keeps, for one learner (a plugin's too), as plain checks.

A plugin's own test suite calls ``check_learner`` (an empty list means it keeps the contract):

    from bench.consumers.contract import check_learner
    def test_my_learner_keeps_the_contract():
        assert check_learner("mypkg.learners:Mine") == []

The checks: a frozen, documented config dataclass; a meta-gradient that fills finite, non-zero ``.grad`` of the
meta-parameters, returns detached results and leaves the update to the runner; a prediction that adapts without
touching the meta-parameters; and, where the learner names an algorithm other registered learners implement, the
same meta-gradient as each of them (``bench verify``'s check), and for a second-order learner agreement with central
finite differences. On small float64 problems of every task kind the learner learns.
"""
from __future__ import annotations

import dataclasses
import pickle

import torch

from bench.consumers import verify
from bench.run.problems import Problem
from meta_bench.algorithms import LEARNERS
from meta_bench.algorithms.base import algorithm_of

PROBLEMS = {"classification": Problem("glyphs", 5, 2, query=3, tasks=2, filters=8),
            "regression": Problem("sinusoid", 1, 5, query=5, tasks=2, filters=16)}


def _config(name: str) -> list[str]:
    cls = LEARNERS[name]
    problems = []
    if not (dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen):
        problems.append(f"{name}: Config must be a frozen dataclass (@dataclass(frozen=True))")
    if not cls.__doc__:
        problems.append(f"{name}: the learner class needs a docstring (its first line is what `bench list` shows)")
    try:
        pickle.loads(pickle.dumps(cls.Config()))  # Ray workers and worker processes receive configs pickled
    except Exception as error:  # noqa: BLE001  (whatever pickling raises is the finding)
        problems.append(f"{name}: its default Config does not pickle ({type(error).__name__}: {error})")
    return problems


def _fresh(name: str, kind: str):
    """A float64 learner on the kind's problem, its batch, and a copy of its weights before anything runs."""
    problem = PROBLEMS[kind]
    learner = problem.learner(name, torch.float64)
    return learner, problem.batch(dtype=torch.float64), [p.detach().clone() for p in learner.model.parameters()]


def _meta_gradient(name: str, kind: str) -> list[str]:
    learner, batch, before = _fresh(name, kind)
    result = learner.meta_gradient(batch)
    problems = []
    if result.loss.dim() != 0 or result.loss.requires_grad or not torch.isfinite(result.loss):
        problems.append(f"{name} ({kind}): meta_gradient must return a finite, detached scalar loss")
    if any(value.requires_grad for value in result.metrics.values()):
        problems.append(f"{name} ({kind}): meta_gradient's metrics must be detached")
    grads = [p.grad for p in learner.meta_parameters() if p.grad is not None]
    if not grads or not all(torch.isfinite(g).all() for g in grads) or sum(float(g.abs().sum()) for g in grads) == 0:
        problems.append(f"{name} ({kind}): meta_gradient must fill finite, non-zero .grad of meta_parameters()")
    if not all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters())):
        problems.append(f"{name} ({kind}): meta_gradient changed the weights (the runner's optimiser steps them)")
    return problems


def _predict(name: str, kind: str) -> list[str]:
    learner, batch, before = _fresh(name, kind)
    episode = batch.task(0)
    output = learner.predict(episode)
    expected = (episode.query_y.shape[0], PROBLEMS[kind].n_way) if kind == "classification" else \
        tuple(episode.query_y.shape)
    problems = []
    if tuple(output.shape) != expected or output.requires_grad:
        problems.append(f"{name} ({kind}): predict must return detached outputs of shape {expected}, got "
                        f"{tuple(output.shape)}{' requiring grad' if output.requires_grad else ''}")
    if not all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters())) or \
            any(p.grad is not None for p in learner.model.parameters()):
        problems.append(f"{name} ({kind}): predict changed the meta-parameters or left gradients on them")
    return problems


def _gradients(name: str, kind: str, tolerance: float) -> list[str]:
    """Agreement with the other implementations of its algorithm, and with finite differences if second order."""
    problem, problems = PROBLEMS[kind], []
    options = verify.accepted(name, {"inner_steps": 2})
    others = [other for other in LEARNERS.names() if other != name and algorithm_of(other) == algorithm_of(name)
              and kind in LEARNERS[other].kinds]
    mine = verify.meta_gradient(name, options, problem)
    for other in others:
        rel = verify.relative_difference(mine, verify.meta_gradient(other, options, problem))
        if rel > tolerance:
            problems.append(f"{name} vs {other} ({kind}): meta-gradients differ (max rel diff {rel:.2e} > "
                            f"{tolerance:g}): registered as algorithm {algorithm_of(name)!r}, it must compute "
                            f"the same meta-gradient as every other implementation of it")
    if verify.is_second_order(name):
        rel = verify.finite_difference_error(name, options, problem)
        if rel > tolerance:
            problems.append(f"{name} ({kind}): meta-gradient against central finite differences: rel diff {rel:.2e}")
    return problems


def check_learner(name: str, tolerance: float = 1e-6) -> list[str]:
    """Every way ``name`` breaks the learner contract (empty: it keeps it). ``name`` as a suite names it: a
    registered name, an entry point's or an import path."""
    problems = _config(name)
    for kind in LEARNERS[name].kinds:
        for check in (_meta_gradient, _predict):
            try:
                problems += check(name, kind)
            except Exception as error:  # noqa: BLE001  (a learner that raises breaks the contract: said, not thrown)
                problems.append(f"{name} ({kind}): {check.__name__.strip('_')} raised {type(error).__name__}: {error}")
        if not problems:
            problems += _gradients(name, kind, tolerance)
    return problems
