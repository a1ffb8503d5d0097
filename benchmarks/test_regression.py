"""CI regression benchmarks (pytest-benchmark): `make bench`, compare runs with --benchmark-compare.

Small shapes so that a run takes a minute; the full table is `python benchmarks/table.py`."""
import pytest

from algorithms import LEARNERS
from benchmarks.conftest import learner_on_glyphs, meta_iteration


def test_batch_assembly_32_episodes_5way_1shot(benchmark, glyphs):
    sampler = glyphs.sampler("train", 5, 1, 15, seed=0)
    counter = iter(range(10**9))
    benchmark(lambda: sampler.batch(32 * next(counter), 32))


@pytest.mark.parametrize("name", LEARNERS.names())
def test_meta_iteration_5way_1shot_b8(benchmark, glyphs, name):
    batch = glyphs.sampler("train", 5, 1, 15, seed=0).batch(0, 8)
    learner = learner_on_glyphs(name)
    benchmark.pedantic(meta_iteration(learner, batch), rounds=3, warmup_rounds=1)
