import pytest
import torch

from algorithms import LEARNERS, TaskSpec
from algorithms.backbones import BackboneConfig, build_model
from bench.config import from_mapping
from datasets import load_dataset


@pytest.fixture(scope="session")
def glyphs():
    return load_dataset("glyphs")


def learner_on_glyphs(name: str, n_way: int = 5, inner_steps: int = 1, **options):
    data = load_dataset("glyphs")
    cls = LEARNERS[name]
    if "inner_steps" in cls.Config.__dataclass_fields__:
        options["inner_steps"] = inner_steps
    model = build_model("conv4", data.input_shape, n_way, BackboneConfig(), 64, seed=0)
    return cls(model, from_mapping(cls.Config, options, name), TaskSpec("classification", n_way,
                                                                       data.num_classes("train")))


def meta_iteration(learner, batch):
    def step():
        for p in learner.meta_parameters():
            p.grad = None
        learner.meta_gradient(batch)
    return step


__all__ = ["learner_on_glyphs", "meta_iteration", "torch"]
