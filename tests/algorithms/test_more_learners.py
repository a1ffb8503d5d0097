"""ANIL, Reptile, Meta-SGD, ProtoNet and MAML++'s options, each proven against an independent computation or a known
identity (float64)."""
import math

import pytest

import torch
from torch import nn
from torch.nn import functional as F

from meta_bench.algorithms.backbones import Classifier
from meta_bench.algorithms.base import TaskSpec
from meta_bench.algorithms.functional import step_loss_weights
from meta_bench.datasets.episode import Episode
from tests.algorithms.helpers import flat_grad, make_learner, make_problem, rel


def test_anil_adapts_the_head_alone_and_its_first_order_form_is_fomaml_restricted_so():
    batch, task, model = make_problem(tasks=2, k_shot=2, q_query=2)
    anil = make_learner("anil", task, model(), inner_lr=0.4, inner_steps=2)
    assert anil.adapted_names() == {"head.weight", "head.bias"}
    adapted = anil.adapted_parameters(batch.task(0), steps=2)
    for name, p in anil.model.named_parameters():
        assert torch.equal(adapted[name], p.detach()) == (not name.startswith("head."))
    # first order: the query gradient at (backbone, adapted head), by hand
    first = make_learner("anil", task, model(), inner_lr=0.4, inner_steps=2, first_order=True)
    first.meta_gradient(batch)
    expected = [torch.zeros_like(p) for p in model().parameters()]
    for b in range(2):
        net = model()
        head = torch.optim.SGD(net.head.parameters(), lr=0.4)
        for _ in range(2):
            head.zero_grad()
            F.cross_entropy(net(batch.support_x[b]), batch.support_y[b]).backward()
            head.step()
        net.zero_grad()
        F.cross_entropy(net(batch.query_x[b]), batch.query_y[b]).backward()
        expected = [e + p.grad / 2 for e, p in zip(expected, net.parameters())]
    assert rel(flat_grad(first.model), torch.cat([e.flatten() for e in expected])) <= 1e-9


def test_anil_is_maml_with_the_backbones_inner_lr_at_zero():
    """MAML with per-layer rates (LSLR) at alpha for the head and 0 for the backbone, the rates frozen."""
    batch, task, model = make_problem(tasks=2, k_shot=2, q_query=2)
    for first_order in (False, True):
        maml = make_learner("maml", task, model(), inner_lr=0.4, inner_steps=2, inner_rates="per_layer_step",
                            first_order=first_order)
        with torch.no_grad():
            for key, rates in maml.rates.items():
                rates.fill_(0.4 if key.startswith("head-") else 0.0).requires_grad_(False)
        maml.meta_gradient(batch)
        anil = make_learner("anil", task, model(), inner_lr=0.4, inner_steps=2, first_order=first_order)
        anil.meta_gradient(batch)
        assert rel(flat_grad(maml.model), flat_grad(anil.model)) <= 1e-9, first_order


@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_reptile_grad_is_theta_minus_phi_from_a_plain_optimiser_and_one_sgd_step_is_joint_training(inner_optimizer):
    batch, task, model = make_problem(tasks=3, k_shot=2, q_query=2)
    for steps in (3, 1):
        learner = make_learner("reptile", task, model(), inner_lr=0.1, inner_steps=steps,
                               inner_optimizer=inner_optimizer)
        learner.meta_gradient(batch)
        theta = [p.detach().clone() for p in model().parameters()]
        expected = [torch.zeros_like(t) for t in theta]
        joint = [torch.zeros_like(t) for t in theta]
        for b in range(3):
            x = torch.cat([batch.support_x[b], batch.query_x[b]])
            y = torch.cat([batch.support_y[b], batch.query_y[b]])
            net = model()
            optimizer = (torch.optim.Adam(net.parameters(), lr=0.1, betas=(0.0, 0.999)) if inner_optimizer == "adam"
                         else torch.optim.SGD(net.parameters(), lr=0.1))
            for step in range(steps):
                optimizer.zero_grad()
                F.cross_entropy(net(x), y).backward()
                if step == 0:
                    joint = [j + 0.1 * p.grad / 3 for j, p in zip(joint, net.parameters())]
                optimizer.step()
            expected = [e + (t - p.detach()) / 3 for e, t, p in zip(expected, theta, net.parameters())]
        got = flat_grad(learner.model)
        assert rel(got, torch.cat([e.flatten() for e in expected])) <= 1e-9, steps
        if steps == 1 and inner_optimizer == "sgd":  # one step: inner lr times the task-loss gradient at theta
            assert rel(got, torch.cat([j.flatten() for j in joint])) <= 1e-9


def test_metasgd_with_every_rate_at_alpha_and_frozen_is_maml_and_its_rate_gradient_is_the_slope_of_the_loss():
    batch, task, model = make_problem(tasks=2, k_shot=2, q_query=2)
    meta = make_learner("metasgd", task, model(), inner_lr=0.3, inner_steps=2)
    assert len(meta.meta_parameters()) == 2 * len(list(meta.model.parameters()))
    for rate in meta.rates.values():
        rate.requires_grad_(False)
    meta.meta_gradient(batch)
    maml = make_learner("maml", task, model(), inner_lr=0.3, inner_steps=2)
    maml.meta_gradient(batch)
    assert rel(flat_grad(meta.model), flat_grad(maml.model)) <= 1e-9
    learning = make_learner("metasgd", task, model(), inner_lr=0.3, inner_steps=2)
    assert_rate_gradient_is_the_central_difference(learning, batch)


def assert_rate_gradient_is_the_central_difference(learner, batch, eps=1e-6):
    """d(meta-loss)/d(rates) along the rates' own gradient direction against a central difference of the loss."""
    for parameter in learner.meta_parameters():
        parameter.grad = None
    learner.meta_gradient(batch)
    rates = list(learner.rates.values())
    grad = torch.cat([r.grad.flatten() for r in rates])
    assert float(grad.norm()) > 0
    direction = grad / grad.norm()
    start = torch.cat([r.detach().flatten() for r in rates])
    values = []
    for sign in (1.0, -1.0):
        torch.nn.utils.vector_to_parameters(start + sign * eps * direction, rates)
        values.append(float(learner.meta_gradient(batch).loss))
    torch.nn.utils.vector_to_parameters(start, rates)
    assert abs((values[0] - values[1]) / (2 * eps) - float(grad.norm())) <= 1e-6 * float(grad.norm())


def test_maml_plus_plus_schedule_follows_the_reference_formula():
    assert step_loss_weights(5, 0, 15) == pytest.approx([0.2] * 5)
    # epoch 3 of 15 at S = 5: the non-final weights fall by 3 / (5 * 15), the final rises by 4 times that
    assert step_loss_weights(5, 3, 15) == pytest.approx([0.16] * 4 + [0.36])
    # the floor 0.03 / S and the ceiling 1 - (S - 1) * 0.03 / S bind late in a long schedule
    assert step_loss_weights(5, 99, 100) == pytest.approx([0.006] * 4 + [0.976])


def test_maml_plus_plus_options_reduce_to_maml_and_anneal_on_the_runners_clock():
    batch, task, model = make_problem(tasks=2, k_shot=2, q_query=2)
    maml = {order: make_learner("maml", task, model(), inner_lr=0.4, inner_steps=3, first_order=order == "first")
            for order in ("first", "second")}
    final_query_loss = [learner.meta_gradient(batch).loss for learner in maml.values()][-1]
    plain = {order: flat_grad(learner.model) for order, learner in maml.items()}
    # the multi-step loss with weights (0, 0, 1) is plain MAML; with any weights it is the weighted sum of MAML's
    # meta-gradients after 1, 2 and 3 steps (the meta-gradient is linear in the objective)
    msl = make_learner("maml", task, model(), inner_lr=0.4, inner_steps=3, multi_step_loss=True)
    msl.step_loss_weights = lambda: [0.0, 0.0, 1.0]
    msl.meta_gradient(batch)
    assert rel(flat_grad(msl.model), plain["second"]) <= 1e-9
    annealed = make_learner("maml", task, model(), inner_lr=0.4, inner_steps=3, multi_step_loss=True,
                            msl_epochs=5, epoch_iterations=4)
    annealed.start_iteration(9)  # epoch 2
    weights = annealed.step_loss_weights()
    assert weights == pytest.approx(step_loss_weights(3, 2, 5))
    # the reported loss stays the final step's query loss (comparable across learners), not the weighted objective
    assert float(annealed.meta_gradient(batch).loss) == pytest.approx(float(final_query_loss), rel=1e-12)
    by_steps = []
    for steps in (1, 2, 3):
        learner = make_learner("maml", task, model(), inner_lr=0.4, inner_steps=steps)
        learner.meta_gradient(batch)
        by_steps.append(flat_grad(learner.model))
    assert rel(flat_grad(annealed.model), sum(w * g for w, g in zip(weights, by_steps))) <= 1e-9
    annealed.start_iteration(20)  # epoch 5: the annealing is over, the final step's loss alone
    assert annealed.step_loss_weights() is None
    # LSLR with every rate at alpha is MAML, and its rates learn
    lslr = make_learner("maml", task, model(), inner_lr=0.4, inner_steps=3, inner_rates="per_layer_step")
    lslr.meta_gradient(batch)
    assert rel(flat_grad(lslr.model), plain["second"]) <= 1e-9
    assert {tuple(r.shape) for r in lslr.rates.values()} == {(3,)}
    assert_rate_gradient_is_the_central_difference(lslr, batch)
    # derivative-order annealing: first order for the first 2 epochs of 4 iterations, second order from then on
    annealing = make_learner("maml", task, model(), inner_lr=0.4, inner_steps=3, first_order_epochs=2,
                             epoch_iterations=4)
    for iteration, order in ((0, "first"), (7, "first"), (8, "second")):
        annealing.model.zero_grad()
        annealing.start_iteration(iteration)
        annealing.meta_gradient(batch)
        assert rel(flat_grad(annealing.model), plain[order]) <= 1e-9, iteration
    assert rel(plain["first"], plain["second"]) > 1e-4  # the orders differ: the check can fail


def test_protonet_loss_and_accuracy_equal_the_closed_form_on_a_2d_example():
    """Identity features (a linear layer set to the identity): 2 classes with prototypes (0, 0) and (4, 0) (two shots
    each); queries (1, 0) and (3, 1)."""
    features = nn.Linear(2, 2)
    with torch.no_grad():
        features.weight.copy_(torch.eye(2))
        features.bias.zero_()
    model = Classifier(features, 2, 2).double()
    learner = make_learner("protonet", TaskSpec("classification", 2), model)
    support = torch.tensor([[[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0]]], dtype=torch.float64)
    query = torch.tensor([[[1.0, 0.0], [3.0, 1.0]]], dtype=torch.float64)
    episode = Episode(support, torch.tensor([[0, 0, 1, 1]]), query, torch.tensor([[0, 0]]), torch.tensor([[0, 1]]))
    logits = learner.predict(episode.task(0))
    # squared distances: query 1 -> (1, 9); query 2 -> (10, 2)
    assert torch.allclose(logits, -torch.tensor([[1.0, 9.0], [10.0, 2.0]], dtype=torch.float64), rtol=0, atol=1e-12)
    result = learner.meta_gradient(episode)
    expected = (math.log1p(math.exp(-8.0)) + math.log1p(math.exp(8.0))) / 2
    assert abs(float(result.loss) - float(expected)) < 1e-12  # -log softmax of the true class (class 0)
    assert float(result.metrics["query_score"]) == 0.5  # the second query is nearer class 1
    batch, task, conv = make_problem(tasks=2, k_shot=2, q_query=2)
    learner = make_learner("protonet", task, conv())
    learner.meta_gradient(batch)
    assert all(p.grad is None for p in learner.model.head.parameters())  # the head is not part of it
    assert all(p.grad is not None for p in learner.meta_parameters())


def test_the_runner_tells_the_learner_its_iteration_and_saves_the_learned_rates(monkeypatch):
    from meta_bench.algorithms.functional import FunctionalLearner
    from bench.spec.suite import expand, parse_suite
    from bench.run.training import run_cell

    seen = []
    start_iteration = FunctionalLearner.start_iteration
    monkeypatch.setattr(FunctionalLearner, "start_iteration", lambda self, i: (seen.append(i), start_iteration(self, i)))
    cell = expand(parse_suite({
        "suite": "plus", "dataset": {"name": "glyphs"}, "backbone": {"filters": 8},
        "learners": [{"name": "maml", "config": {"inner_rates": "per_layer_step", "inner_steps": 2, "first_order_epochs": 1,
                                                 "epoch_iterations": 2}}],
        "grid": {"n_way": [5], "k_shot": [1], "devices": ["cpu"], "seeds": [0]},
        "training": {"meta_iterations": 4, "meta_batch_size": 2, "query": 2, "validate_every": 4,
                     "validation_episodes": 2, "warmup_iterations": 0, "dtype": "float64", "optimizer": "sgd",
                     "lr": 0.1},
        "evaluation": {"test_episodes": 2, "query": 2, "warmup_episodes": 0}}))[0]
    result = run_cell(cell)
    assert seen == [0, 1, 2, 3]
    rates = {k: v for k, v in result.state_dict.items() if k.startswith("inner_rates.")}
    assert "inner_rates.head-weight" in rates and len(rates) == 4 * 4 + 2  # Conv-4 (conv w, b, BN w, b) and the head
    assert any(not torch.allclose(v, torch.full_like(v, 0.4)) for v in rates.values())  # meta-learned
