import torch

from algorithms import LEARNERS
from algorithms.base import algorithm_of
from algorithms.backbones import BackboneConfig, build_model
from bench.run.factory import task_of
from bench.core.config import from_mapping
from datasets import DATASETS, load_dataset

FOMAML_VARIANTS = [name for name in LEARNERS.names() if algorithm_of(name) == "fomaml"]  # from the registry


def make_problem(dataset="glyphs", n_way=5, k_shot=1, q_query=3, tasks=3, filters=8, seed=0, dtype=torch.float64,
                 **backbone):
    data = load_dataset(dataset)
    batch = data.sampler("train", n_way, k_shot, q_query, seed).batch(0, tasks).to("cpu", dtype)
    task = task_of(data, n_way)
    entry = DATASETS[dataset]

    def model():
        return build_model(entry.backbone, data.input_shape, n_way, BackboneConfig(filters=filters, **backbone),
                           entry.conv_filters, seed).to(dtype)

    return batch, task, model


def make_learner(name, task, model, **options):
    cls = LEARNERS[name]
    return cls(model, from_mapping(cls.Config, options, name), task)


def flat_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def rel(a, b):
    return float((a - b).norm() / max(a.norm(), b.norm()))
