"""Test-time adaptation of many episodes at once gives each episode the outputs it gets alone."""
import dataclasses

import pytest
import torch

from bench.run.evaluation import evaluate
from bench.run.problems import Problem
from meta_bench.algorithms import LEARNERS
from meta_bench.datasets import load_dataset

PROBLEMS = {"glyphs": Problem("glyphs", 3, 1, query=2, tasks=5, filters=4, inner_steps=2),
            "sinusoid": Problem("sinusoid", 1, 3, query=4, tasks=5, inner_steps=2)}
BATCHED = {"glyphs": ("loop", "vmap"), "sinusoid": ("loop", "vmap", "bmm")}


def batching_options(name: str, dataset: str) -> list[dict]:
    """Every task batching a learner has (one run for learners without the option)."""
    if "task_batching" not in LEARNERS[name].Config.__dataclass_fields__:
        return [{}]
    return [{"task_batching": mode, **({"inner_lr": 0.01} if dataset == "sinusoid" else {})}
            for mode in BATCHED[dataset]
            if not (mode == "bmm" and "plan" not in LEARNERS[name].Config.__dataclass_fields__)]


@pytest.mark.parametrize("name, dataset", [(name, dataset) for dataset, problem in PROBLEMS.items()
                                           for name in LEARNERS.names()
                                           if problem.task().kind in LEARNERS[name].kinds])  # what each can learn
def test_predict_batch_gives_every_episode_its_own_adapted_outputs(name, dataset):
    problem = PROBLEMS[dataset]
    batch = problem.batch(dtype=torch.float64)
    for options in batching_options(name, dataset):
        learner = problem.learner(name, dtype=torch.float64, **options)
        together = learner.predict_batch(batch)
        alone = torch.stack([learner.predict(batch.task(i)) for i in range(len(batch))])
        assert together.shape == alone.shape
        assert torch.allclose(together, alone, rtol=1e-9, atol=1e-10), (name, options)
        if options.get("task_batching") in ("vmap", "bmm"):  # adapted apart: one episode's support moves only its own
            support_x = batch.support_x.clone()
            support_x[0] = 0
            moved = learner.predict_batch(dataclasses.replace(batch, support_x=support_x))
            assert torch.equal(moved[1:], together[1:]) and not torch.equal(moved[0], together[0])


@pytest.mark.parametrize("options", [{"task_batching": "bmm"}, {"task_batching": "vmap", "vmap_chunk": 3}])
def test_evaluation_in_passes_scores_every_episode_as_one_by_one(options):
    problem = PROBLEMS["sinusoid"]
    learner = problem.learner("maml", dtype=torch.float64, **options)
    source = load_dataset("sinusoid").sampler("test", 1, 3, 4, seed=0)
    one_by_one = evaluate(learner, source, 11, torch.device("cpu"), torch.float64, per_pass=1)
    in_passes = evaluate(learner, source, 11, torch.device("cpu"), torch.float64, per_pass=4)
    assert len(in_passes) == 11 and len(set(in_passes)) == 11
    assert in_passes == pytest.approx(one_by_one, rel=1e-9)


@pytest.mark.parametrize("name", ["metasgd", "maml"])
def test_a_learners_saved_state_comes_back_whole_learned_rates_included(name):
    """What a later test condition evaluates: the meta-parameters a finished run saved, loaded into a fresh learner."""
    problem = PROBLEMS["sinusoid"]
    trained = problem.learner(name, inner_lr=0.01, inner_rates="per_layer_step") if name == "maml" else \
        problem.learner(name, inner_lr=0.01)
    with torch.no_grad():
        for parameter in trained.meta_parameters():
            parameter.mul_(3.0).add_(0.5)
    fresh = problem.learner(name, inner_lr=0.01, inner_rates="per_layer_step") if name == "maml" else \
        problem.learner(name, inner_lr=0.01)
    fresh.load_state_dict(trained.state_dict())
    assert trained.state_dict().keys() == fresh.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), fresh.state_dict().values()))
    assert any(key.startswith("inner_rates.") for key in fresh.state_dict())
