"""The fast execution plan of `fomaml/fast` and `maml/fast`: the model's own function, run differently. That its
gradients are the model's is proven with every other variant (test_gradients, test_oracle, `bench verify`); here,
that it really runs the way it says."""
import pytest
import torch

from benchmarks.plain import batched_mlp_references, plain_references
from meta_bench.algorithms.fast_plan import FastForward
from tests.algorithms.helpers import flat_grad, make_learner, make_problem, rel


@pytest.mark.parametrize("backbone", [{}, {"bn_scale": False}, {"pooling": "stride"}])
def test_the_plan_computes_the_model_channels_last_with_relu_after_max_pooling(backbone):
    batch, _, model = make_problem(filters=8, **backbone)
    net = model()
    max_pooling = backbone.get("pooling", "max") == "max"
    blocks = net.features[:4]  # each block: conv, batch norm, ReLU[, max-pool]
    watched = {"norm": [block[1] for block in blocks], "relu": [block[2] for block in blocks],
               "pool": [block[3] for block in blocks] if max_pooling else []}
    for kind, modules in watched.items():
        for module in modules:
            module.register_forward_hook(lambda m, args, out, kind=kind: seen[kind].append(args[0]))
    x = batch.query_x[0]
    seen = {kind: [] for kind in watched}
    expected = net(x)
    assert all(float(h.detach().min()) >= 0 for h in seen["pool"])  # the model pools after ReLU
    seen = {kind: [] for kind in watched}
    got = FastForward(net)(dict(net.named_parameters()), x)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    convs = seen["norm"]  # what batch norm sees is the convolution's output
    assert len(convs) == 4 and all(out.is_contiguous(memory_format=torch.channels_last) for out in convs)
    assert not any(out.is_contiguous() for out in convs[:3])  # channels-last for real, not a 1x1 ambiguity
    if max_pooling:  # pooling the batch norm's output, negatives included; ReLU after, on the pooled quarter
        assert len(seen["pool"]) == 4 and all(float(h.detach().min()) < 0 for h in seen["pool"])
        assert seen["relu"] == []
    else:
        assert len(seen["relu"]) == 4

def test_the_plan_takes_the_sinusoid_mlp_unchanged():
    batch, _, model = make_problem("sinusoid", n_way=1, k_shot=5)
    net = model()
    x = batch.query_x[0]
    assert torch.equal(FastForward(net)(dict(net.named_parameters()), x), net(x))


@pytest.mark.parametrize("name, second_order", [("fomaml/fast", False), ("maml/fast", True)])
def test_only_steps_differentiated_twice_run_contiguous(name, second_order):
    """Second-order inner steps run faster contiguous on the CPU (their double backward has no channels-last
    kernels); the query pass, first-order steps and test-time adaptation run channels-last."""
    batch, task, model = make_problem(tasks=2, k_shot=1, q_query=3, filters=8)
    learner = make_learner(name, task, model(), inner_steps=2)
    formats = []
    learner.model.features[1][1].register_forward_hook(  # the second block's batch norm: 8 channels, not ambiguous
        lambda m, args, out: formats.append((len(args[0]), args[0].is_contiguous(memory_format=torch.channels_last))))
    learner.meta_gradient(batch)
    support, query = 5, 15
    assert formats == [(support, not second_order)] * 2 + [(query, True)] + [(support, not second_order)] * 2 + \
        [(query, True)]
    formats.clear()
    learner.predict(batch.task(0))
    assert formats == [(support, True)] * learner.config.eval_inner_steps + [(query, True)]


@pytest.mark.parametrize("steps", [1, 2])
def test_the_speed_tables_plain_references_compute_the_learners_meta_gradient(steps):
    """The plain implementations the speed table compares against do the same work: same meta-gradient."""
    batch, task, model = make_problem(tasks=3, k_shot=1, q_query=2, filters=8)
    expected = {}
    for name in ("fomaml/functional", "maml"):
        learner = make_learner(name, task, model(), inner_lr=0.4, inner_steps=steps)
        learner.meta_gradient(batch)
        expected[name] = flat_grad(learner.model)
    assert rel(expected["maml"], expected["fomaml/functional"]) > 1e-4  # the orders differ, so agreeing is not trivial
    for label, reference in plain_references(model(), 0.4, steps).items():
        reference.meta_gradient(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        match = {"FOMAML": "fomaml/functional", "MAML": "maml"}[reference.order]
        assert rel(flat_grad(reference.model), expected[match]) <= 1e-12, label


@pytest.mark.parametrize("steps", [1, 2])
def test_the_hand_written_batched_mlp_reference_computes_the_learners_meta_gradient(steps):
    batch, task, model = make_problem("sinusoid", n_way=1, k_shot=3, q_query=4, tasks=5)
    expected = {}
    for name in ("fomaml/functional", "maml"):
        learner = make_learner(name, task, model(), inner_lr=0.1, inner_steps=steps, task_batching="loop")
        learner.meta_gradient(batch)
        expected[name] = flat_grad(learner.model)
    assert rel(expected["maml"], expected["fomaml/functional"]) > 1e-4
    for label, reference in batched_mlp_references(model(), 0.1, steps).items():
        reference.meta_gradient(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        match = {"FOMAML": "fomaml/functional", "MAML": "maml"}[reference.order]
        assert rel(flat_grad(reference.model), expected[match]) <= 1e-12, label
