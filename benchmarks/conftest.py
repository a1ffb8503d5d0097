import pytest

from meta_bench.datasets import load_dataset


@pytest.fixture(scope="session")
def glyphs():
    return load_dataset("glyphs")

