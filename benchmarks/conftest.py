import pytest

from bench.consumers.gate import Workload, learner_on, meta_iteration  # noqa: F401  (the benchmarks' step, defined once)
from datasets import load_dataset


@pytest.fixture(scope="session")
def glyphs():
    return load_dataset("glyphs")


def learner_on_glyphs(name: str, n_way: int = 5, inner_steps: int = 1, device: str = "cpu", **options):
    """A learner on glyphs with the default Conv-4, on ``device``; ``inner_steps`` where the learner has them."""
    return learner_on(name, Workload("glyphs", "glyphs", n_way, 1, 0, inner_steps), device=device, **options)
