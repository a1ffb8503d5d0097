import torch

from bench.core.config import from_mapping
from bench.run.problems import Problem
from meta_bench.algorithms import LEARNERS
from meta_bench.algorithms.base import algorithm_of

FOMAML_VARIANTS = [name for name in LEARNERS.names() if algorithm_of(name) == "fomaml"]  # from the registry


def make_problem(dataset="glyphs", n_way=5, k_shot=1, q_query=3, tasks=3, filters=8, seed=0, dtype=torch.float64,
                 **backbone):
    """A batch, the task and a factory of fresh identical models (further ``backbone`` options), from the package's
    one problem builder."""
    problem = Problem(dataset, n_way, k_shot, query=q_query, tasks=tasks, filters=filters, seed=seed)
    return problem.batch(dtype=dtype), problem.task(), lambda: problem.model(dtype, **backbone)


def make_learner(name, task, model, **options):
    cls = LEARNERS[name]
    return cls(model, from_mapping(cls.Config, options, name), task)


def flat_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def rel(a, b):
    return float((a - b).norm() / max(a.norm(), b.norm()))
