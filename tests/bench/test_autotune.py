"""Execution chosen by measurement: among exact candidates only, never over an explicit choice, decided once."""
import json

import pytest
import torch

from bench.run import autotune
from bench.run.problems import Problem
from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite
from tests.algorithms.helpers import flat_grad, rel
from tests.suites import TINY

SINUSOID = Problem("sinusoid", 1, 3, query=4, tasks=6, inner_steps=2)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def decide(learner, batch, path, **kw):
    return autotune.decide(learner, "maml", "code-1", batch, CPU, cache=path, **kw)


def test_every_candidate_computes_the_same_meta_gradient_and_the_fastest_is_taken(tmp_path, monkeypatch):
    batch = SINUSOID.batch(dtype=torch.float64)
    learner = SINUSOID.learner("maml", dtype=torch.float64, inner_lr=0.01)
    candidates = learner.execution_candidates(len(batch), CPU)
    assert {c["task_batching"] for c in candidates} == {"loop", "vmap", "bmm"}
    grads = []
    for choice in candidates:
        learner.use_execution(choice)
        for p in learner.model.parameters():
            p.grad = None
        learner.meta_gradient(batch)
        grads.append(flat_grad(learner.model))
    assert all(rel(g, grads[0]) <= 1e-10 for g in grads) and float(grads[0].norm()) > 0
    # the decision follows the measured times: make a chosen candidate the fastest, whatever the machine says
    fastest = autotune.label(candidates[1], 1)
    monkeypatch.setattr(autotune, "_median_ms", lambda *a: 1.0 if autotune.label(
        learner.chosen, torch.get_num_threads()) == fastest else 5.0)
    decision = decide(learner, batch, tmp_path / "a.json", budget=2)
    assert decision.how == "measured" and decision.choice == candidates[1] and decision.threads == 1
    assert set(decision.times_ms) == {autotune.label(c, t) for c in candidates for t in (1, 2)}
    assert learner.execution(len(batch), CPU) == candidates[1] and torch.get_num_threads() == 1
    assert all(p.grad is None for p in learner.meta_parameters())  # timing leaves no gradient behind
    tags = decision.tags()
    assert tags["threads"] == "1" and json.loads(tags["autotune_ms"])[fastest] == 1.0


def test_an_explicit_choice_is_never_overridden(tmp_path):
    batch = SINUSOID.batch()
    torch.set_num_threads(2)
    learner = SINUSOID.learner("maml", task_batching="vmap")
    decision = decide(learner, batch, tmp_path / "a.json")
    assert decision.how == "explicit" and decision.choice == {} and torch.get_num_threads() == 2
    assert learner.execution(len(batch), CPU) == {"task_batching": "vmap", "vmap_chunk": "6"}
    assert not (tmp_path / "a.json").exists()
    with pytest.raises(ValueError, match="never overridden"):
        learner.use_execution({"task_batching": "loop", "vmap_chunk": "0"})


def test_a_decision_is_cached_under_what_it_depends_on(tmp_path, monkeypatch):
    path = tmp_path / "autotune.json"
    batch = SINUSOID.batch()
    first = decide(SINUSOID.learner("maml"), batch, path, budget=1)
    assert first.how == "measured" and path.exists()

    def no_timing(*args):
        raise AssertionError("a cached decision is not measured again")

    with monkeypatch.context() as patch:
        patch.setattr(autotune, "_median_ms", no_timing)
        again = SINUSOID.learner("maml")
        cached = decide(again, batch, path, budget=1)
        assert cached.how == "cached" and cached.choice == first.choice and again.chosen == first.choice
    # another shape, another config, other code, another thread budget: decided afresh
    assert decide(SINUSOID.learner("maml"), SINUSOID.batch().tasks(0, 4), path, budget=1).how == "measured"
    assert decide(SINUSOID.learner("maml", inner_steps=1), batch, path, budget=1).how == "measured"
    assert autotune.decide(SINUSOID.learner("maml"), "maml", "code-2", batch, CPU, budget=1, cache=path
                           ).how == "measured"
    assert decide(SINUSOID.learner("maml"), batch, path, budget=2).how == "measured"
    assert len(json.loads(path.read_text())) == 5
    path.write_text("{ damaged")  # a damaged cache costs a measurement, never a run
    assert decide(SINUSOID.learner("maml"), batch, path, budget=1).how == "measured"
    assert len(json.loads(path.read_text())) == 1


def test_a_cell_runs_as_decided_and_gives_back_the_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("METABENCH_AUTOTUNE", str(tmp_path / "autotune.json"))
    torch.set_num_threads(2)
    suite = parse_suite({**TINY, "dataset": {"name": "sinusoid"},
                         "learners": [{"name": "maml", "config": {"inner_lr": 0.01}}],
                         "grid": {**TINY["grid"], "n_way": [1], "k_shot": [2]}})
    (cell,) = expand(suite)
    result = run_cell(cell)
    ran = result.execution
    assert ran["autotune"] == "measured" and torch.get_num_threads() == 2
    times = json.loads(ran["autotune_ms"])
    chosen = autotune.label({"task_batching": ran["task_batching"], "vmap_chunk": ran["vmap_chunk"]},
                            int(ran["threads"]))
    assert times[chosen] == min(times.values())
    assert run_cell(cell).execution["autotune"] == "cached"
