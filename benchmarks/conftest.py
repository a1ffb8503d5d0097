import pytest

from bench.factory import new_learner
from bench.gate import meta_iteration  # noqa: F401  (the benchmarks' step, defined once in the package)
from datasets import load_dataset


@pytest.fixture(scope="session")
def glyphs():
    return load_dataset("glyphs")


def learner_on_glyphs(name: str, n_way: int = 5, inner_steps: int = 1, device: str = "cpu", **options):
    """A learner on glyphs with the default Conv-4, on ``device``; ``inner_steps`` where the learner has them."""
    from algorithms import LEARNERS  # noqa: PLC0415

    if "inner_steps" in LEARNERS[name].Config.__dataclass_fields__:
        options["inner_steps"] = inner_steps
    return new_learner("glyphs", name, options, n_way, device=device)
