"""An independent oracle for the meta-gradients: its own Conv-4 / MLP forward (``F.conv2d``, batch statistics by
hand, cross-entropy from logsumexp), its own SGD inner loop and its own task averaging. Nothing of the learners'
code is shared (no functional_call, no task_loss, no accumulate_grads, no Episode.task), so a bug in a helper that
every variant uses cannot pass by agreeing with itself."""
import pytest
import torch
from torch.nn import functional as F

from bench.consumers import verify
from meta_bench.algorithms import LEARNERS
from meta_bench.algorithms.functional import FunctionalConfig, FunctionalLearner
from meta_bench.algorithms.inner_loop import InnerLoopLearner
from tests.algorithms.helpers import make_learner, make_problem, rel

# learners whose meta-gradient is the query gradient through an inner SGD loop (Reptile's is not: its own test)
GRADIENT_LEARNERS = [name for name, cls in LEARNERS.items() if issubclass(cls, InnerLoopLearner) and name != "reptile"]
SECOND_ORDER = set(verify.second_order_learners())
EPS = 1e-5  # torch's BatchNorm default


def conv4(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """With a batch-norm scale: 4 tensors a block (conv weight, conv bias, gamma, beta); without (Finn's
    reference): 3 (conv weight, conv bias, beta)."""
    per_block = (len(params) - 2) // 4
    h = x
    for block in range(4):
        weight, bias, *affine = params[per_block * block:per_block * (block + 1)]
        gamma, beta = affine if per_block == 4 else (torch.ones_like(affine[0]), affine[0])
        h = F.conv2d(h, weight, bias, padding=1)
        mean = h.mean(dim=(0, 2, 3), keepdim=True)
        var = ((h - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)  # biased: what batch norm normalises with
        h = (h - mean) / torch.sqrt(var + EPS) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
        h = F.max_pool2d(torch.clamp(h, min=0), 2)
    return h.reshape(h.shape[0], -1) @ params[-2].T + params[-1]


def mlp(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = torch.clamp(x @ params[0].T + params[1], min=0)
    h = torch.clamp(h @ params[2].T + params[3], min=0)
    return h @ params[4].T + params[5]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (torch.logsumexp(logits, dim=1) - logits[torch.arange(len(labels)), labels]).mean()


def squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((output - target) ** 2).mean()


def head_only(name: str, theta: list) -> set[int]:
    """ANIL (Raghu et al. 2020) adapts the last layer alone: every parameter but the head's weight and bias is frozen
    in the inner loop."""
    return set(range(len(theta) - 2)) if name == "anil" else set()


def oracle_meta_gradient(forward, loss, theta, batch, lr, steps, second_order, frozen=(), scale=(1.0, 1.0),
                         step_weights=None):
    """``lr``: a number, or ``lr(step, index)`` giving the inner rate (a number or a tensor of the parameter's shape)
    of parameter ``index`` at ``step``; ``frozen``: indices of parameters the inner loop leaves alone; ``scale``:
    (support, query) loss factors; ``step_weights``: the meta-objective is sum_i w_i * (query loss after step i + 1)
    instead of the final query loss (second order only here)."""
    tasks = batch.support_x.shape[0]
    rate = lr if callable(lr) else (lambda step, index: lr)
    total = [torch.zeros_like(p) for p in theta]
    for b in range(tasks):
        start = [p.detach().clone().requires_grad_() for p in theta]
        fast, objective = start, 0.0
        for step in range(steps):
            support_loss = scale[0] * loss(forward(fast, batch.support_x[b]), batch.support_y[b])
            grads = torch.autograd.grad(support_loss, fast, create_graph=second_order)
            fast = [p if i in frozen else p - rate(step, i) * g for i, (p, g) in enumerate(zip(fast, grads))]
            if not second_order:  # the first-order approximation: each step's weights are constants
                fast = [p.detach().requires_grad_() for p in fast]
            if step_weights is not None:
                objective = objective + step_weights[step] * loss(forward(fast, batch.query_x[b]), batch.query_y[b])
        if step_weights is None:
            objective = loss(forward(fast, batch.query_x[b]), batch.query_y[b])
        wrt = start if second_order else fast
        grads = torch.autograd.grad(scale[1] * objective, wrt)
        total = [t + g / tasks for t, g in zip(total, grads)]
    return torch.cat([t.flatten() for t in total])


@pytest.mark.parametrize("name", GRADIENT_LEARNERS)
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("dataset, n_way, lr", [("glyphs", 5, 0.4), ("sinusoid", 1, 0.01)])
def test_meta_gradient_equals_the_independent_oracle(name, steps, dataset, n_way, lr):
    batch, task, model = make_problem(dataset, n_way=n_way, k_shot=2, q_query=3, tasks=3)
    learner = make_learner(name, task, model(), inner_lr=lr, inner_steps=steps)
    learner.meta_gradient(batch)
    got = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
    theta = [p.detach() for p in model().parameters()]
    forward, loss = (conv4, cross_entropy) if dataset == "glyphs" else (mlp, squared_error)
    expected = oracle_meta_gradient(forward, loss, theta, batch, lr, steps, second_order=name in SECOND_ORDER,
                                    frozen=head_only(name, theta))
    assert float(expected.norm()) > 0
    assert rel(got, expected) <= 1e-9, (name, rel(got, expected))
    if name in SECOND_ORDER:  # and the oracle tells the orders apart, so agreeing is not trivial
        first = oracle_meta_gradient(forward, loss, theta, batch, lr, steps, second_order=False,
                                     frozen=head_only(name, theta))
        assert rel(first, expected) > 1e-4


@pytest.mark.parametrize("name", GRADIENT_LEARNERS)
def test_finn_reference_options_equal_the_oracle(name):
    """Finn et al.'s reference: batch norm with a shift and no scale, kept out of the fast weights, and losses
    summed over examples / K (support: N * mean; query: N * Q / K * mean)."""
    n_way, k_shot, q_query, steps, lr = 5, 2, 3, 2, 0.4
    batch, task, model = make_problem(n_way=n_way, k_shot=k_shot, q_query=q_query, tasks=2, bn_scale=False)
    learner = make_learner(name, task, model(), inner_lr=lr, inner_steps=steps, loss_reduction="sum_over_k",
                           adapt_bn=False)
    learner.meta_gradient(batch)
    got = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
    theta = [p.detach() for p in model().parameters()]
    assert len(theta) == 4 * 3 + 2  # no batch-norm scale
    betas = {3 * block + 2 for block in range(4)}
    expected = oracle_meta_gradient(conv4, cross_entropy, theta, batch, lr, steps, name in SECOND_ORDER,
                                    frozen=betas | head_only(name, theta), scale=(n_way, n_way * q_query / k_shot))
    assert rel(got, expected) <= 1e-9, (name, rel(got, expected))
    adapted = oracle_meta_gradient(conv4, cross_entropy, theta, batch, lr, steps, name in SECOND_ORDER,
                                   scale=(n_way, n_way * q_query / k_shot))
    if name != "anil":  # (ANIL never adapts the shifts)
        assert rel(adapted, expected) > 1e-6  # freezing the shifts matters, so agreeing is not trivial


def test_learned_inner_rates_and_the_multi_step_loss_equal_the_oracle():
    """MAML++'s LSLR (a rate per tensor and step) with the multi-step loss, and Meta-SGD (a rate per element), at
    random rates: the oracle takes the same rates and weights, and nothing else of the learners."""
    batch, task, model = make_problem(n_way=5, k_shot=2, q_query=3, tasks=2)
    theta = [p.detach() for p in model().parameters()]
    generator = torch.Generator().manual_seed(3)
    plus = make_learner("maml", task, model(), inner_lr=0.4, inner_steps=2, inner_rates="per_layer_step", multi_step_loss=True,
                        msl_epochs=4, epoch_iterations=10)
    with torch.no_grad():
        for rates in plus.rates.values():
            rates.copy_(0.2 + 0.4 * torch.rand(rates.shape, generator=generator, dtype=rates.dtype))
    plus.start_iteration(25)  # epoch 2 of 4: 1/2 - 2 / (2 * 4) and 1/2 + 2 / (2 * 4)
    weights = plus.step_loss_weights()
    assert weights == pytest.approx([0.25, 0.75], abs=1e-15)
    plus.meta_gradient(batch)
    lslr = list(plus.rates.values())
    expected = oracle_meta_gradient(conv4, cross_entropy, theta, batch, lambda step, i: lslr[i][step].detach(), 2,
                                    second_order=True, step_weights=weights)
    assert rel(torch.cat([p.grad.flatten() for p in plus.model.parameters()]), expected) <= 1e-9
    assert rel(expected, oracle_meta_gradient(conv4, cross_entropy, theta, batch, lambda step, i: lslr[i][step]
                                              .detach(), 2, second_order=True)) > 1e-4  # the weights matter

    meta = make_learner("metasgd", task, model(), inner_lr=0.4, inner_steps=2)
    with torch.no_grad():
        for rates in meta.rates.values():
            rates.copy_(0.2 + 0.4 * torch.rand(rates.shape, generator=generator, dtype=rates.dtype))
    meta.meta_gradient(batch)
    elementwise = list(meta.rates.values())
    expected = oracle_meta_gradient(conv4, cross_entropy, theta, batch, lambda step, i: elementwise[i].detach(), 2,
                                    second_order=True)
    assert rel(torch.cat([p.grad.flatten() for p in meta.model.parameters()]), expected) <= 1e-9


@pytest.mark.parametrize("plan", ["plain", "fast"])
@pytest.mark.parametrize("inner_rates", ["fixed", "per_layer_step", "per_element"])
@pytest.mark.parametrize("fast_weights", ["all", "head"])
@pytest.mark.parametrize("first_order", [False, True])
def test_every_combination_of_the_functional_learners_options_equals_the_oracle(first_order, fast_weights,
                                                                                inner_rates, plan):
    """The learner family by composition: each option combination (order, fast weights, inner rates, execution
    plan), presets or not, at random learned rates, against the oracle told the same rates and frozen set."""
    batch, task, model = make_problem(n_way=3, k_shot=1, q_query=2, tasks=2, filters=4)
    config = FunctionalConfig(inner_lr=0.4, inner_steps=2, first_order=first_order, fast_weights=fast_weights,
                              inner_rates=inner_rates, plan=plan)
    learner = FunctionalLearner(model(), config, task)
    theta = [p.detach() for p in model().parameters()]
    names = [name for name, _ in learner.model.named_parameters()]
    rates = dict(learner.rates.items()) if learner.rates is not None else {}
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for value in rates.values():
            value.copy_(0.2 + 0.4 * torch.rand(value.shape, generator=generator, dtype=value.dtype))

    def rate(step, index):
        if inner_rates == "fixed":
            return 0.4
        value = rates[names[index].replace(".", "-")].detach()
        return value[min(step, len(value) - 1)] if inner_rates == "per_layer_step" else value

    learner.meta_gradient(batch)
    got = torch.cat([p.grad.flatten() for p in learner.model.parameters()])
    frozen = head_only("anil" if fast_weights == "head" else "maml", theta)
    expected = oracle_meta_gradient(conv4, cross_entropy, theta, batch, rate, 2, not first_order, frozen=frozen)
    assert float(expected.norm()) > 0 and rel(got, expected) <= 1e-9, rel(got, expected)
