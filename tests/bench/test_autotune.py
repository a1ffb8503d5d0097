"""Execution chosen by measurement: among exact candidates only, never over an explicit choice, decided once per
what changes the answer (phase included); a candidate that fails is left out, measuring leaves no trace, and a step
out of memory falls back to the next candidate."""
import dataclasses
import json
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.core import hardware
from bench.run import autotune
from bench.run.problems import Problem, meta_iteration
from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite
from meta_bench.algorithms.functional import FunctionalLearner
from tests.algorithms.helpers import flat_grad, make_learner, make_problem, rel
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


def scripted(ms):
    """A clock for ``_sample_ms`` that runs each candidate for real (its state changes, its errors raise) and reads
    its time from ``ms`` (by label, or a function of the learner and the label): which wins does not depend on this
    machine's timings."""
    def sample_ms(learner, batch, device, warm):
        meta_iteration(learner, batch)()
        key = autotune.label(learner.execution(len(batch), device), torch.get_num_threads())
        return ms(learner, key) if callable(ms) else ms[key]
    return sample_ms


def running_stats_problem():
    """Conv-4 whose batch norm keeps running statistics (buffers a step updates), two tasks: vmap cannot run it."""
    batch, task, model = make_problem(n_way=2, q_query=2, tasks=2, filters=4, batch_norm="running_stats")
    return batch, lambda: make_learner("maml", task, model(), inner_steps=1)


def copied(state):
    return {k: v.detach().clone() for k, v in state.items()}


def equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


LOOP = {"task_batching": "loop", "vmap_chunk": "0"}


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
    monkeypatch.setattr(autotune, "_sample_ms", lambda *a: 1.0 if autotune.label(
        learner.chosen, torch.get_num_threads()) == fastest else 5.0)
    decision = decide(learner, batch, tmp_path / "a.json", budget=2)
    assert decision.how == "measured" and decision.choice == candidates[1] and decision.threads == 1
    assert set(decision.times_ms) == {autotune.label(c, t) for c in candidates for t in (1, 2)}
    assert learner.execution(len(batch), CPU) == candidates[1] and torch.get_num_threads() == 1
    assert all(p.grad is None for p in learner.meta_parameters())  # timing leaves no gradient behind
    tags = decision.tags()
    assert tags["threads"] == "1" and json.loads(tags["autotune_ms"])[fastest] == 1.0


def test_a_race_times_fewer_threads_and_again_only_near_the_fastest_and_warms_each_choice_once(tmp_path, monkeypatch):
    batch = SINUSOID.batch()
    learner = SINUSOID.learner("maml")
    candidates = learner.execution_candidates(len(batch), CPU)
    loop1, loop2, vmap1, vmap2 = (autotune.label(c, t) for c in candidates[:2] for t in (1, 2))
    # under 2 threads vmap is fastest and loop near it (within RACE_MARGIN), the others far behind; loop t1 looks
    # fastest at first and is not (median 3.0): vmap t2, steady at 1.4, runs the cell
    series = {vmap2: [1.4, 1.4, 1.4], loop2: [1.6, 1.6, 1.6], loop1: [1.3, 3.0, 3.0]}
    calls = []

    def sample_ms(learner_, batch_, device, warm):
        name = autotune.label(learner_.chosen, torch.get_num_threads())
        calls.append((name, warm))
        return series[name][sum(n == name for n, _ in calls) - 1] if name in series else 5.0

    monkeypatch.setattr(autotune, "_sample_ms", sample_ms)
    decision = decide(learner, batch, tmp_path / "a.json", budget=2)
    assert decision.choice == candidates[1] and decision.threads == 2  # the median decides, not the first time
    # 1 thread only for the choices near the fastest under 2 (loop, vmap): the far ones' are never timed
    assert decision.times_ms == {**{autotune.label(c, 2): 5.0 for c in candidates}, loop2: 1.6, vmap2: 1.4,
                                 loop1: 3.0, vmap1: 5.0}
    timed = {name: sum(n == name for n, _ in calls) for name, _ in calls}
    # timed again: those near the fastest first time (loop t1's 1.3), not loop t2 (1.6 > 1.2 * 1.3)
    assert timed == {name: 3 if name in (vmap2, loop1) else 1 for name in decision.times_ms}
    # each execution choice warms up once, before its first time (under the most threads), and never again
    assert [name for name, warm in calls if warm] == [autotune.label(c, 2) for c in candidates]
    assert [name for name, _ in calls[:len(candidates)]] == [autotune.label(c, 2) for c in candidates]


def test_a_choice_that_raises_under_the_most_threads_leaves_the_others_their_fewer_threads(tmp_path, monkeypatch):
    batch = SINUSOID.batch()
    learner = SINUSOID.learner("maml")
    candidates = learner.execution_candidates(len(batch), CPU)
    bmm2, loop1, loop2 = autotune.label(candidates[-1], 2), autotune.label(LOOP, 1), autotune.label(LOOP, 2)
    times = {loop2: 1.1, loop1: 1.0}  # bmm would have been the fastest under 2 threads: it raises there

    def sample_ms(learner_, batch_, device, warm):
        name = autotune.label(learner_.chosen, torch.get_num_threads())
        if name == bmm2:
            raise RuntimeError("out of memory")
        return times.get(name, 5.0)

    monkeypatch.setattr(autotune, "_sample_ms", sample_ms)
    decision = decide(learner, batch, tmp_path / "a.json", budget=2)
    assert (decision.choice, decision.threads) == (LOOP, 1)  # loop, near the fastest that ran, got its 1 thread
    assert decision.failed == {bmm2: "RuntimeError: out of memory"}
    assert set(decision.times_ms) == {autotune.label(c, 2) for c in candidates[:-1]} | {loop1}


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
        patch.setattr(autotune, "_sample_ms", no_timing)
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


def test_a_candidate_that_raises_is_left_out_with_its_reason(tmp_path, monkeypatch):
    batch, new = running_stats_problem()
    # vmap would win on time, but it cannot run batch norm that updates running statistics
    monkeypatch.setattr(autotune, "_sample_ms", scripted({"loop t1": 5.0, "vmap/2 t1": 1.0}))
    learner = new()
    decision = decide(learner, batch, tmp_path / "a.json", budget=1)
    assert decision.how == "measured" and decision.choice == LOOP and learner.execution(2, CPU) == LOOP
    failed = json.loads(decision.tags()["autotune_failed"])
    assert list(failed) == ["vmap/2 t1"] and "Batch norm got a batched tensor" in failed["vmap/2 t1"]
    assert decide(new(), batch, tmp_path / "a.json", budget=1).choice == LOOP  # cached as measured

    def broken(learner, batch, device, warm):
        raise ValueError(f"{learner.execution(len(batch), device)['task_batching']} is broken")

    monkeypatch.setattr(autotune, "_sample_ms", broken)  # only where every candidate fails does the cell fail
    with pytest.raises(RuntimeError, match="no execution candidate could run") as error:
        decide(new(), batch, tmp_path / "b.json", budget=1)
    assert "loop t1: ValueError: loop is broken" in str(error.value)
    assert "vmap/2 t1: ValueError: vmap is broken" in str(error.value)


def test_a_cell_on_running_statistics_runs_and_saves_what_an_explicit_cell_saves(tmp_path, monkeypatch):
    monkeypatch.setenv("METABENCH_AUTOTUNE", str(tmp_path / "autotune.json"))
    torch.set_num_threads(1)  # both cells on one thread: the same float reductions
    suite = parse_suite({**TINY, "learners": [{"name": "maml", "config": {"inner_steps": 1}}],
                         "backbone": {"filters": 4, "batch_norm": "running_stats"},
                         "training": {**TINY["training"], "dtype": "float64"}})
    (cell,) = expand(suite)
    tuned = run_cell(cell, test=False)
    explicit = run_cell(dataclasses.replace(
        cell, learner_config=dataclasses.replace(cell.learner_config, task_batching="loop")), test=False)
    assert tuned.execution["autotune"] == "measured" and tuned.execution["task_batching"] == "loop"
    assert "Batch norm got a batched tensor" in json.loads(tuned.execution["autotune_failed"])["vmap/2 t1"]
    assert explicit.execution["autotune"] == "explicit"
    assert any("running_mean" in k for k in tuned.state_dict) and equal(tuned.state_dict, explicit.state_dict)


def train(learner, batch, steps):
    optimizer = torch.optim.SGD(learner.meta_parameters(), lr=0.1)
    for iteration in range(steps):
        learner.start_iteration(iteration)
        optimizer.zero_grad(set_to_none=True)
        learner.meta_gradient(batch)
        optimizer.step()


def test_measuring_leaves_the_learner_as_it_found_it(tmp_path, monkeypatch):
    batch, new = running_stats_problem()
    monkeypatch.setattr(autotune, "_sample_ms", scripted({"loop t1": 1.0, "loop t2": 2.0}))
    tuned, explicit = new(), new()
    initial = copied(tuned.state_dict())
    decision = decide(tuned, batch, tmp_path / "a.json", budget=2)
    assert decision.choice == LOOP and decision.threads == 1 and decision.how == "measured"
    # every buffer (running means, variances, batch counts) and parameter as before; no gradient left
    assert equal(copied(tuned.state_dict()), initial) and all(p.grad is None for p in tuned.meta_parameters())
    explicit.use_execution(decision.choice)
    train(tuned, batch, 2)
    train(explicit, batch, 2)
    assert equal(tuned.state_dict(), explicit.state_dict())


def test_the_key_covers_buffers_modules_and_the_machine(tmp_path, monkeypatch):
    batch, task, model = make_problem(n_way=2, q_query=2, tasks=2, filters=4)
    _, new_running = running_stats_problem()  # the same problem, its batch norm keeping running statistics

    def key(learner, device=CPU):
        return autotune.cache_key(learner, "maml", "code", batch, device, torch.float64, 1)

    plain = make_learner("maml", task, model(), inner_steps=1)
    base = key(plain)
    assert key(new_running()) != base  # the same parameters, batch norm with running statistics
    other = make_learner("maml", task, model(), inner_steps=1)
    other.model.features[0][2] = nn.Tanh()  # the same parameters and buffers, another module
    assert key(other) != base
    # the CPUs this process may use: cores, affinity, the cgroup's quota
    cores = os.cpu_count() or 1
    with monkeypatch.context() as patch:
        patch.setattr(os, "cpu_count", lambda: cores + 1)
        assert key(plain) != base
    if hasattr(os, "sched_getaffinity"):
        allowed = os.sched_getaffinity(0)
        with monkeypatch.context() as patch:
            patch.setattr(os, "sched_getaffinity", lambda pid: set(range(len(allowed) + 1)))
            assert key(plain) != base
    quota = tmp_path / "cpu.max"
    with monkeypatch.context() as patch:
        patch.setattr(hardware, "CGROUP_CPU_MAX", quota)
        quota.write_text("50000 100000\n")  # half a core
        half = key(plain)
        quota.write_text("max 100000\n")  # no quota
        assert key(plain) != half
    # a GPU's memory, multiprocessors and UUID (a MIG slice reports its own), faked: this runs on the CPU
    whole = SimpleNamespace(total_memory=80 * 2**30, multi_processor_count=132, uuid="GPU-aaaa")
    mig_slice = SimpleNamespace(total_memory=20 * 2**30, multi_processor_count=32, uuid="MIG-bbbb")
    twin = SimpleNamespace(**{**vars(whole), "uuid": "GPU-cccc"})
    smaller = SimpleNamespace(**{**vars(whole), "total_memory": 40 * 2**30, "multi_processor_count": 66})
    keys = set()
    for properties in (whole, mig_slice, twin, smaller):
        with monkeypatch.context() as patch:
            patch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
            patch.setattr(torch.cuda, "get_device_properties", lambda device=None, p=properties: p)
            keys.add(key(plain, torch.device("cuda")))
    assert len(keys | {base}) == 5


def test_an_interrupted_decision_gives_back_the_threads_and_the_execution(tmp_path, monkeypatch):
    batch = SINUSOID.batch()
    learner = SINUSOID.learner("maml")
    learner.use_execution(LOOP)
    torch.set_num_threads(1)

    def interrupted(learner, batch, device, warm):
        if torch.get_num_threads() == 2 and learner.execution(len(batch), device)["task_batching"] == "vmap":
            raise KeyboardInterrupt  # not a candidate's failure: it ends the decision, through every finally
        return 1.0

    monkeypatch.setattr(autotune, "_sample_ms", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decide(learner, batch, tmp_path / "a.json", budget=2)
    assert torch.get_num_threads() == 1 and learner.execution(len(batch), CPU) == LOOP


def test_the_learner_says_its_execution_phases():
    maml_pp = SINUSOID.learner("maml", first_order_epochs=1, multi_step_loss=True, msl_epochs=2, epoch_iterations=2)
    assert [maml_pp.execution_phase(i) for i in (0, 1, 2, 4)] == [
        "first order, multi-step loss", "first order, multi-step loss", "second order, multi-step loss",
        "second order"]
    assert {SINUSOID.learner("maml").execution_phase(i) for i in range(5)} == {"second order"}
    assert Problem(tasks=1).learner("protonet").execution_phase(10 ** 6) == ""  # the interface's default: one


def test_a_new_phase_is_decided_again_as_the_learner_then_computes(tmp_path, monkeypatch):
    monkeypatch.setenv("METABENCH_AUTOTUNE", str(tmp_path / "autotune.json"))
    torch.set_num_threads(1)
    batch = SINUSOID.batch()
    learner = SINUSOID.learner("maml", first_order_epochs=1, epoch_iterations=2)
    # vmap fastest in first order, the loop in second: a decision kept from first order would keep vmap
    ms = {"vmap/6 t1": 1.0, "vmap/2 t1": 2.0, "bmm/6 t1": 3.0, "loop t1": 4.0}
    monkeypatch.setattr(autotune, "_sample_ms", scripted(lambda learner, key: (
        ms[key] if not learner.second_order else 0.5 if key == "loop t1" else 5.0)))
    tuner = autotune.Autotuner(learner, "maml", "code", batch, CPU)
    ran = []
    for iteration in range(4):
        learner.start_iteration(iteration)
        tuner.before(iteration, batch)
        ran.append(learner.execution(len(batch), CPU)["task_batching"])
        tuner.meta_gradient(batch)
    assert ran == ["vmap", "vmap", "loop", "loop"]
    assert json.loads(tuner.tags()["autotune_history"]) == [[0, "first order", "vmap/6 t1", "measured"],
                                                            [2, "second order", "loop t1", "measured"]]


def test_a_step_out_of_memory_is_run_again_on_the_next_candidate(tmp_path, monkeypatch):
    monkeypatch.setenv("METABENCH_AUTOTUNE", str(tmp_path / "autotune.json"))
    torch.set_num_threads(1)
    batch = SINUSOID.batch(dtype=torch.float64)

    def new():
        learner = SINUSOID.learner("maml", dtype=torch.float64, inner_lr=0.01)
        learner.model.register_buffer("steps", torch.zeros((), dtype=torch.int64))  # state a step changes
        return learner

    ms = {"vmap/6 t1": 1.0, "vmap/2 t1": 2.0, "bmm/6 t1": 3.0, "loop t1": 4.0}
    monkeypatch.setattr(autotune, "_sample_ms", scripted(ms))
    learner, reference = new(), new()
    tuner = autotune.Autotuner(learner, "maml", "code", batch, CPU)
    assert learner.execution(len(batch), CPU)["task_batching"] == "vmap"
    real, simulated = FunctionalLearner.meta_gradient, []

    def out_of_memory_once_under_vmap(self, batch):
        self.model.steps.add_(1)
        result = real(self, batch)  # gradients accumulated, then the device runs out (as late as it can)
        if self.execution(len(batch), CPU)["task_batching"] == "vmap" and not simulated:
            simulated.append(1)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return result

    monkeypatch.setattr(FunctionalLearner, "meta_gradient", out_of_memory_once_under_vmap)
    learner.start_iteration(0)
    tuner.before(0, batch)
    tuner.meta_gradient(batch)
    # the next fastest (vmap in smaller chunks: less memory at once), the step again from its start
    assert learner.execution(len(batch), CPU) == {"task_batching": "vmap", "vmap_chunk": "2"}
    tags = tuner.tags()
    assert tags["autotune"] == "fallback" and tags["threads"] == "1"
    assert "OutOfMemoryError" in json.loads(tags["autotune_failed"])["vmap/6 t1"]
    assert json.loads(tags["autotune_history"])[-1] == [0, "second order", "vmap/2 t1", "fallback"]
    reference.use_execution({"task_batching": "vmap", "vmap_chunk": "2"})
    reference.meta_gradient(batch)
    assert int(learner.model.steps) == 1 and equal(learner.state_dict(), reference.state_dict())
    assert torch.equal(flat_grad(learner.model), flat_grad(reference.model))

    def always_out_of_memory(self, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(FunctionalLearner, "meta_gradient", always_out_of_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # nothing left to fall back to: the cell fails
        tuner.meta_gradient(batch)
    assert [row[2] for row in json.loads(tuner.tags()["autotune_history"])] == ["vmap/6 t1", "vmap/2 t1", "bmm/6 t1",
                                                                             "loop t1"]


def test_measuring_draws_nothing_from_the_generators_a_cell_draws_from(tmp_path, monkeypatch):
    """A candidate that draws random numbers (dropout, noise) while it is timed leaves torch's, numpy's and Python's
    generators where they were: the cell's own draws do not depend on whether its execution was measured or
    cached."""
    import random  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    monkeypatch.setattr(autotune, "_sample_ms", lambda learner, batch, device, warm: float(
        torch.rand(()) + np.random.rand() + random.random()))
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    expected = (float(torch.rand(())), float(np.random.rand()), random.random())
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    decide(SINUSOID.learner("maml"), SINUSOID.batch(), tmp_path / "a.json", budget=1)
    assert (float(torch.rand(())), float(np.random.rand()), random.random()) == expected
