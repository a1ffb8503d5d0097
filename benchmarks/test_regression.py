"""CI regression benchmarks (pytest-benchmark): `make bench`. Every registered learner (discovered from the
registry) at the gate's fixed workloads, one test-episode adaptation each, and episode-batch assembly; grouped so
that the table compares learners side by side. JSON with pytest-benchmark's machine info lands in
results/benchmarks/. Timing decides nothing here: `bench ci-check --perf` is the gate."""
import pytest

from bench.consumers.gate import WORKLOADS
from bench.run.problems import meta_iteration
from meta_bench.algorithms import LEARNERS


def test_batch_assembly_32_episodes_5way_1shot(benchmark, glyphs):
    benchmark.group = "episode batch assembly"
    sampler = glyphs.sampler("train", 5, 1, 15, seed=0)
    counter = iter(range(10**9))
    benchmark(lambda: sampler.batch(32 * next(counter), 32))


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
@pytest.mark.parametrize("name", LEARNERS.names())
def test_meta_iteration(benchmark, name, workload):
    benchmark.group = f"meta-iteration {workload.name}"
    step = meta_iteration(workload.learner(name), workload.batch())
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("name", LEARNERS.names())
def test_test_episode_adaptation(benchmark, name):
    benchmark.group = "test-episode adaptation 5w1s"
    workload = WORKLOADS[0]
    learner = workload.learner(name)
    episode = workload.batch().task(0)
    benchmark.pedantic(lambda: learner.predict(episode), rounds=3, warmup_rounds=1)
