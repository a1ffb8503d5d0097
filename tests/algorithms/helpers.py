import torch

from algorithms import LEARNERS, TaskSpec
from algorithms.backbones import BackboneConfig, build_model
from bench.config import from_mapping
from datasets import load_dataset

FOMAML_VARIANTS = ["fomaml/deepcopy", "fomaml/functional", "fomaml/higher"]


def make_problem(dataset="glyphs", n_way=5, k_shot=1, q_query=3, tasks=3, filters=8, seed=0, dtype=torch.float64):
    data = load_dataset(dataset)
    batch = data.sampler("train", n_way, k_shot, q_query, seed).batch(0, tasks).to("cpu", dtype)
    classification = data.task_kind == "classification"
    task = TaskSpec(data.task_kind, n_way, data.num_classes("train") if classification else 0)
    backbone = "conv4" if classification else "mlp"

    def model():
        return build_model(backbone, data.input_shape, n_way, BackboneConfig(filters=filters), 64, seed).to(dtype)

    return batch, task, model


def make_learner(name, task, model, **options):
    cls = LEARNERS[name]
    return cls(model, from_mapping(cls.Config, options, name), task)


def flat_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def rel(a, b):
    return float((a - b).norm() / max(a.norm(), b.norm()))
