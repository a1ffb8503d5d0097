"""The scientific core: variants agree, MAML's meta-gradient is the true one, adaptation does what it says."""
import copy

import pytest
import torch

from bench.consumers import verify
from bench.run.measure import saved_bytes_of
from meta_bench.algorithms import LEARNERS
from meta_bench.algorithms.base import algorithm_of
from meta_bench.algorithms.inner_loop import InnerLoopLearner
from tests.algorithms.helpers import FOMAML_VARIANTS, flat_grad, make_learner, make_problem, rel

CASES = [("glyphs", 5, 0.4), ("sinusoid", 1, 0.01)]


@pytest.mark.parametrize("dataset, n_way, inner_lr", CASES)
@pytest.mark.parametrize("steps", [1, 3])
def test_fomaml_variants_give_the_same_meta_gradient(dataset, n_way, inner_lr, steps):
    batch, task, model = make_problem(dataset, n_way=n_way, k_shot=2, q_query=3, tasks=3)
    grads = {}
    for name in FOMAML_VARIANTS:
        learner = make_learner(name, task, model(), inner_lr=inner_lr, inner_steps=steps)
        learner.meta_gradient(batch)
        grads[name] = flat_grad(learner.model)
    reference = grads["fomaml/functional"]
    assert float(reference.norm()) > 0
    for name, grad in grads.items():
        assert rel(grad, reference) <= 1e-6, name


@pytest.mark.parametrize("name", ["fomaml/functional", "maml", "fomaml/fast", "maml/fast"])
@pytest.mark.parametrize("chunk", [0, 2])
def test_vmap_batching_equals_the_task_loop(name, chunk):
    batch, task, model = make_problem(tasks=3, k_shot=1, q_query=2)
    grads = []
    for mode in ("loop", "vmap"):
        learner = make_learner(name, task, model(), inner_steps=2, task_batching=mode, vmap_chunk=chunk)
        result = learner.meta_gradient(batch)
        grads.append((flat_grad(learner.model), result.loss, result.metrics["inner_losses"]))
    assert rel(grads[0][0], grads[1][0]) <= 1e-10
    assert torch.allclose(grads[0][1], grads[1][1]) and torch.allclose(grads[0][2], grads[1][2])


@pytest.mark.parametrize("name", ["fomaml/functional", "maml", "metasgd", "anil"])
@pytest.mark.parametrize("chunk", [0, 2])
def test_bmm_batching_of_the_mlp_equals_the_task_loop(name, chunk):
    batch, task, model = make_problem("sinusoid", n_way=1, k_shot=3, q_query=4, tasks=5)
    grads = []
    for mode in ("loop", "bmm"):
        learner = make_learner(name, task, model(), inner_lr=0.01, inner_steps=2, task_batching=mode,
                               vmap_chunk=chunk, multi_step_loss=True)
        result = learner.meta_gradient(batch)
        grads.append((flat_grad(learner.model), result.loss, result.metrics["inner_losses"]))
    assert float(grads[0][0].norm()) > 0
    assert rel(grads[0][0], grads[1][0]) <= 1e-10
    assert torch.allclose(grads[0][1], grads[1][1]) and torch.allclose(grads[0][2], grads[1][2])


def test_bmm_batching_refuses_a_model_it_cannot_run():
    _, task, model = make_problem(tasks=2)  # Conv-4
    with pytest.raises(ValueError, match="Linear and ReLU layers only; this model has .*Conv2d"):
        make_learner("maml", task, model(), task_batching="bmm")
    with pytest.raises(ValueError, match="plan 'plain'"):
        make_learner("maml/fast", task, model(), task_batching="bmm")


def test_the_textbook_deepcopy_snippet_updates_nothing_and_ours_does():
    batch, task, model = make_problem(tasks=2, k_shot=1, q_query=2)
    # the textbook snippet: adapt a copy, backward on the copy's query loss, step the meta-optimiser
    textbook = model()
    start = [p.detach().clone() for p in textbook.parameters()]
    meta_optimizer = torch.optim.SGD(textbook.parameters(), lr=0.1)
    meta_optimizer.zero_grad()
    for b in range(2):
        t = batch.task(b)
        clone = copy.deepcopy(textbook)
        inner = torch.optim.SGD(clone.parameters(), lr=0.4)
        inner.zero_grad()
        torch.nn.functional.cross_entropy(clone(t.support_x), t.support_y).backward()
        inner.step()
        torch.nn.functional.cross_entropy(clone(t.query_x), t.query_y).backward()
    meta_optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(start, textbook.parameters()))
    assert all(p.grad is None for p in textbook.parameters())
    # ours: the copy's gradients reach the meta-parameters, and the update equals the functional variant's
    updated = {}
    for name in ("fomaml/deepcopy", "fomaml/functional"):
        learner = make_learner(name, task, model(), inner_lr=0.4, inner_steps=1)
        optimizer = torch.optim.SGD(learner.meta_parameters(), lr=0.1)
        optimizer.zero_grad()
        learner.meta_gradient(batch)
        optimizer.step()
        updated[name] = torch.cat([p.detach().flatten() for p in learner.model.parameters()])
    initial = torch.cat([p.flatten() for p in start])
    assert float((updated["fomaml/deepcopy"] - initial).norm()) > 1e-3
    assert rel(updated["fomaml/deepcopy"] - initial, updated["fomaml/functional"] - initial) <= 1e-6


@pytest.mark.parametrize("case", verify.CASES, ids=lambda c: c.dataset)
def test_maml_meta_gradient_matches_central_finite_differences(case):
    lr = 0.4 if case.dataset == "glyphs" else 0.01
    assert verify.finite_difference_error("maml", {"inner_steps": 2, "inner_lr": lr}, case) <= 1e-6
    # the check can fail: the first-order gradient is not the derivative of the post-adaptation loss
    assert verify.finite_difference_error("maml", {"inner_steps": 2, "inner_lr": lr, "first_order": True}, case) > 1e-2


@pytest.mark.parametrize("dataset, n_way, inner_lr", CASES)
def test_maml_differs_from_fomaml_unless_second_order_terms_vanish(dataset, n_way, inner_lr):
    batch, task, model = make_problem(dataset, n_way=n_way, k_shot=2, q_query=3, tasks=2)

    def grad(name, lr, **extra):
        learner = make_learner(name, task, model(), inner_lr=lr, inner_steps=2, **extra)
        learner.meta_gradient(batch)
        return flat_grad(learner.model)

    assert rel(grad("maml", inner_lr), grad("fomaml/functional", inner_lr)) > 1e-3
    assert rel(grad("maml", 0.0), grad("fomaml/functional", 0.0)) <= 1e-12
    assert rel(grad("maml", inner_lr, first_order=True), grad("fomaml/functional", inner_lr)) <= 1e-12


@pytest.mark.parametrize("name", FOMAML_VARIANTS + ["maml", "maml/fast"])
def test_zero_inner_lr_leaves_the_meta_parameters_and_steps_count_exactly(name):
    batch, task, model = make_problem(tasks=2, k_shot=2, q_query=2)
    episode = batch.task(0)
    frozen = make_learner(name, task, model(), inner_lr=0.0)
    adapted = frozen.adapted_parameters(episode, steps=3)
    for key, p in frozen.model.named_parameters():
        assert torch.equal(adapted[key], p.detach())
    for steps in (0, 1, 4):
        learner = make_learner(name, task, model(), inner_lr=0.3, inner_steps=steps)
        assert learner.meta_gradient(batch).metrics["inner_losses"].shape == (steps,)
        # S steps of plain SGD on the support loss, by hand
        reference = model()
        sgd = torch.optim.SGD(reference.parameters(), lr=0.3)
        for _ in range(steps):
            sgd.zero_grad()
            torch.nn.functional.cross_entropy(reference(episode.support_x), episode.support_y).backward()
            sgd.step()
        got = learner.adapted_parameters(episode, steps)
        for key, p in reference.named_parameters():
            assert torch.allclose(got[key], p.detach(), atol=1e-12), (steps, key)


def test_inner_losses_fall_during_adaptation():
    batch, task, model = make_problem(tasks=2, k_shot=2, q_query=2)
    losses = make_learner("fomaml/functional", task, model(), inner_lr=0.4, inner_steps=5).meta_gradient(batch)
    inner = losses.metrics["inner_losses"]
    assert float(inner[-1]) < float(inner[0])


def saved_bytes(name, steps, tasks, **options):
    batch, task, model = make_problem(tasks=tasks, k_shot=1, q_query=5, filters=16, dtype=torch.float32)
    learner = make_learner(name, task, model(), inner_steps=steps, **options) if name != "finetune" else \
        make_learner(name, task, model())
    return saved_bytes_of(lambda: learner.meta_gradient(batch))


def test_first_order_saved_bytes_stay_flat_in_inner_steps_and_equal_across_variants():
    for name in FOMAML_VARIANTS:
        assert len({saved_bytes(name, s, 2) for s in (1, 2, 5)}) == 1, name
    assert len({saved_bytes(name, 2, 2) for name in FOMAML_VARIANTS}) == 1


def test_second_order_saved_bytes_grow_linearly_in_steps_but_not_in_tasks():
    by_steps = [saved_bytes("maml", s, 2) for s in (1, 2, 3, 4)]
    increments = [b - a for a, b in zip(by_steps, by_steps[1:])]
    assert increments[0] > 0 and len(set(increments)) == 1
    assert saved_bytes("maml", 2, 1, task_batching="loop") == saved_bytes("maml", 2, 4, task_batching="loop")
    # vmap over the whole meta-batch holds every task's graph at once; chunks bound it
    whole = saved_bytes("maml", 2, 4, task_batching="vmap")
    chunked = saved_bytes("maml", 2, 4, task_batching="vmap", vmap_chunk=1)
    assert whole > 3 * chunked


def test_finetune_computes_frozen_features_once_per_episode():
    batch, task, model = make_problem(tasks=1, k_shot=2, q_query=3)
    learner = make_learner("finetune", task, model(), head_epochs=7)
    calls = []
    learner.model.features.register_forward_hook(lambda *args: calls.append(1))
    learner.predict(batch.task(0))
    assert len(calls) == 2  # support and query, not once per head step
    full = make_learner("finetune", task, model(), head_epochs=7, finetune_backbone=True)
    assert full.predict(batch.task(0)).shape == (15, 5)


def test_finetune_trains_on_global_class_ids():
    batch, task, model = make_problem(tasks=2, k_shot=1, q_query=2)
    learner = make_learner("finetune", task, model())
    learner.meta_gradient(batch)
    # cross-entropy pulls the bias of every labelled class up (negative gradient) and all others down
    pulled_up = (learner.global_head.bias.grad < 0).nonzero().flatten()
    assert set(pulled_up.tolist()) == set(batch.classes.flatten().tolist())
    assert learner.global_head.out_features == task.num_train_classes


def test_every_registered_learner_is_covered_by_the_checks():
    assert set(FOMAML_VARIANTS) == set(verify.families()["fomaml"])
    # every algorithm with more than one registered implementation is a family that verify checks
    algorithms = {}
    for name in LEARNERS.names():
        algorithms.setdefault(algorithm_of(name), []).append(name)
    assert verify.families() == {a: names for a, names in algorithms.items() if len(names) > 1}
    assert verify.second_order_learners() == ["anil", "maml", "maml/fast", "metasgd"]
    # every learner is held to an independent computation: the inner-loop learners to the oracle (test_oracle.py),
    # the others to their own (a new learner of another kind fails here until it has one)
    from tests.algorithms import test_more_learners  # noqa: PLC0415
    more = test_more_learners
    own = {"finetune": test_finetune_trains_on_global_class_ids,
           "protonet": more.test_protonet_loss_and_accuracy_equal_the_closed_form_on_a_2d_example,
           "reptile": more.test_reptile_grad_is_theta_minus_phi_from_a_plain_optimiser_and_one_sgd_step_is_joint_training}
    uncovered = [name for name, cls in LEARNERS.items() if name not in own and not issubclass(cls, InnerLoopLearner)]
    assert uncovered == [] and all(map(callable, own.values()))


@pytest.mark.parametrize("name", FOMAML_VARIANTS + ["maml"])
def test_finn_reduction_makes_the_inner_step_n_times_the_mean_loss_step(name):
    """Finn et al.'s xent is per-example CE / K, summed by tf.gradients over the N*K support examples: one inner
    step is theta - alpha * N * grad(mean CE)."""
    batch, task, model = make_problem(n_way=5, k_shot=2, q_query=2, tasks=1)
    episode = batch.task(0)
    learner = make_learner(name, task, model(), inner_lr=0.1, loss_reduction="sum_over_k")
    adapted = learner.adapted_parameters(episode, steps=1)
    reference = model()
    mean_ce = torch.nn.functional.cross_entropy(reference(episode.support_x), episode.support_y)
    grads = torch.autograd.grad(mean_ce, list(reference.parameters()))
    for (key, p), g in zip(reference.named_parameters(), grads):
        assert torch.allclose(adapted[key], p.detach() - 0.1 * 5 * g, rtol=0, atol=1e-12), key


@pytest.mark.parametrize("name", FOMAML_VARIANTS + ["maml"])
def test_batch_norm_kept_out_of_the_fast_weights_is_not_adapted_but_is_meta_learned(name):
    batch, task, model = make_problem(tasks=2, k_shot=1, q_query=2, bn_scale=False)
    learner = make_learner(name, task, model(), inner_lr=0.4, adapt_bn=False)
    names = [key for key, _ in learner.model.named_parameters()]
    shifts = [key for key in names if key.endswith("1.bias")]  # features.<block>.1 is the batch norm
    assert len(shifts) == 4 and not any(key.endswith("1.weight") for key in names)  # a shift and no scale
    adapted = learner.adapted_parameters(batch.task(0), steps=2)
    start = dict(learner.model.named_parameters())
    for key in names:
        assert torch.equal(adapted[key], start[key].detach()) == (key in shifts), key
    learner.meta_gradient(batch)
    assert all(float(start[key].grad.abs().sum()) > 0 for key in shifts)  # the outer optimiser learns them
