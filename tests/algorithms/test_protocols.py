"""Each published-protocol option pinned to what the reference code does (Finn et al. 2017; Chen et al. 2019)."""
import math

import pytest
import torch

from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite
from meta_bench.algorithms.finetune import CosineClassifier
from tests.algorithms.helpers import make_learner, make_problem
from tests.suites import TINY


@pytest.mark.parametrize("k_shot, steps", [(1, 200), (5, 700)])
def test_chen_head_fit_is_100_epochs_of_batch_4_sgd(k_shot, steps, monkeypatch):
    """Their fine-tuning: 100 epochs over the shuffled support set in batches of 4: ceil(N*K/4) * 100 steps."""
    batch, task, model = make_problem(n_way=5, k_shot=k_shot, q_query=2, tasks=1)
    learner = make_learner("finetune", task, model(), head_epochs=100, head_batch_size=4, head_init="default")
    made = []
    real = torch.optim.SGD.__init__

    def record(self, params, **options):
        made.append((self, options))
        real(self, params, **options)

    counted = []
    monkeypatch.setattr(torch.optim.SGD, "__init__", record)
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, closure=None: counted.append(self))
    learner.predict(batch.task(0))
    ((optimizer, options),) = made
    assert options == {"lr": 0.01, "momentum": 0.9, "dampening": 0.9, "weight_decay": 0.001}
    assert len(counted) == steps == math.ceil(5 * k_shot / 4) * 100 == learner.head_steps(5 * k_shot)
    assert all(o is optimizer for o in counted)


def test_default_head_init_is_pytorchs_and_the_zero_head_stays_available():
    batch, task, model = make_problem(n_way=5, k_shot=1, q_query=2, tasks=1)
    default = make_learner("finetune", task, model(), head_init="default")._fresh_head(model())
    zeros = make_learner("finetune", task, model())._fresh_head(model())
    assert float(zeros.weight.detach().abs().sum()) == 0
    bound = 1 / math.sqrt(default.in_features)  # nn.Linear's kaiming-uniform(a=sqrt 5) bound
    weight = default.weight.detach()
    assert 0 < float(weight.abs().max()) <= bound and float(weight.std()) > bound / 4


def test_baseline_plus_plus_scores_are_a_scaled_cosine():
    head = CosineClassifier(3, 5).double()
    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    weight = head.linear.weight.detach()
    expected = 2.0 * (x / x.norm(dim=1, keepdim=True)) @ weight.T
    assert torch.allclose(head(x), expected, atol=1e-4)  # the 1e-5 in the norm, as in their distLinear
    assert CosineClassifier(3, 201).scale == 10.0
    batch, task, model = make_problem(n_way=5, k_shot=1, q_query=2, tasks=2)
    learner = make_learner("finetune", task, model(), classifier="cosine")
    assert isinstance(learner.global_head, CosineClassifier) and learner.global_head.scale == 10.0  # 1,686 classes
    learner.meta_gradient(batch)
    assert learner.predict(batch.task(0)).shape == (10, 5)


def test_a_running_statistics_backbone_is_evaluated_in_evaluation_mode():
    """Ordinary batch norm at test time: a query image's features do not depend on the other query images."""
    batch, task, model = make_problem(n_way=5, k_shot=1, q_query=4, tasks=2, batch_norm="running_stats")
    learner = make_learner("finetune", task, model(), head_epochs=5)
    learner.meta_gradient(batch)  # training mode: updates the running statistics
    episode = batch.task(0)
    whole = learner._features(episode.query_x)
    alone = learner._features(episode.query_x[:3])
    assert torch.allclose(whole[:3], alone, atol=1e-12) and learner.model.training
    batch_stats = make_learner("finetune", task, make_problem(n_way=5, k_shot=1, q_query=4, tasks=2)[2]())
    assert not torch.allclose(batch_stats._features(episode.query_x)[:3], batch_stats._features(episode.query_x[:3]))


def test_meta_gradient_clipping_bounds_every_element_before_the_step(monkeypatch):
    suite = parse_suite({**TINY, "learners": ["maml"], "training": {**TINY["training"], "meta_grad_clip": 1e-4}})
    seen = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, closure=None: seen.append(
        max(float(p.grad.abs().max()) for group in self.param_groups for p in group["params"])))
    run_cell(expand(suite)[0])
    assert len(seen) == 4 and max(seen) <= 1e-4 and min(seen) == pytest.approx(1e-4)  # it did clip


def test_query_k_shot_draws_as_many_queries_as_shots_in_training_and_test(monkeypatch):
    from meta_bench.datasets.base import ImageDataset

    suite = parse_suite({**TINY, "learners": ["maml"], "grid": {**TINY["grid"], "k_shot": [3]},
                         "training": {**TINY["training"], "query": "k_shot"},
                         "evaluation": {**TINY["evaluation"], "query": "k_shot"}})
    (cell,) = expand(suite)
    asked = []
    real = ImageDataset.sampler
    monkeypatch.setattr(ImageDataset, "sampler", lambda self, split, n, k, q, seed: asked.append((split, k, q)) or
                        real(self, split, n, k, q, seed))
    run_cell(cell)
    assert sorted(asked) == [("test", 3, 3), ("train", 3, 3), ("val", 3, 3)]
    assert cell.test_query == 3
