"""The hand-written script a researcher would write for one MAML cell of Finn et al.'s sinusoid protocol, with no
harness: the yardstick `bench run` is held to (``benchmarks.end_to_end``). The same work as the cell of
``suites/sinusoid_finn2017.yaml`` at K = 10, shortened to ``--iterations``: meta-batches of 25 tasks (A ~ U[0.1, 5],
phase ~ U[0, pi], x ~ U[-5, 5]; 10 support and 10 query points), one second-order inner step of 0.01 on the mean
squared error (``plain.BatchedMLPMAML``: every task's weights in one tensor, one ``baddbmm`` per layer), Adam 1e-3;
100 validation tasks every 5,000 iterations and at the end (10 steps, 100 query points); then 600 test tasks at each
K of 5, 10 and 20, scored on 100 query points after 1, 5 and 10 steps of 0.01. Tasks are drawn a batch at a time
from one numpy generator. Prints the test MSE after 10 steps at K = 5 and the seconds it took.

    .venv/bin/python -m benchmarks.handwritten_sinusoid [--iterations 10000] [--threads 1]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from benchmarks.plain import BatchedMLPMAML

INNER_LR, META_BATCH, TEST_TASKS, QUERY_AT_TEST, STEPS = 0.01, 25, 600, 100, (1, 5, 10)


def tasks(rng: np.random.Generator, count: int, support: int, query: int) -> tuple[torch.Tensor, ...]:
    amplitude = rng.uniform(0.1, 5.0, (count, 1, 1))
    phase = rng.uniform(0.0, np.pi, (count, 1, 1))
    x = rng.uniform(-5.0, 5.0, (count, support + query, 1))
    y = amplitude * np.sin(x - phase)
    as_tensor = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    return as_tensor(x[:, :support]), as_tensor(y[:, :support]), as_tensor(x[:, support:]), as_tensor(y[:, support:])


def model() -> nn.Module:
    net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.01, a=-0.02, b=0.02)
            nn.init.zeros_(layer.bias)
    return net


def adapted_errors(maml: BatchedMLPMAML, batch: tuple[torch.Tensor, ...], steps: int) -> dict[int, float]:
    """Mean query MSE after each step count in ``STEPS`` (up to ``steps``), all tasks adapted at once."""
    support_x, support_y, query_x, query_y = batch
    weights = [t.detach().expand(len(support_x), *t.shape) for layer in maml.layers
               for t in (layer.weight, layer.bias)]
    errors = {}
    for step in range(1, steps + 1):
        weights = [w.requires_grad_() for w in weights]
        grads = torch.autograd.grad(maml._losses(maml._forward(weights, support_x), support_y).sum(), weights)
        weights = [(w - INNER_LR * g).detach() for w, g in zip(weights, grads)]
        if step in STEPS:
            with torch.no_grad():
                errors[step] = float(maml._losses(maml._forward(weights, query_x), query_y).mean())
    return errors


def run(iterations: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = model()
    maml = BatchedMLPMAML(net, INNER_LR, 1, second_order=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    validation = tasks(np.random.default_rng(seed + 1), 100, 10, QUERY_AT_TEST)
    for iteration in range(iterations):
        optimizer.zero_grad(set_to_none=True)
        maml.meta_gradient(*tasks(rng, META_BATCH, 10, 10))
        optimizer.step()
        if (iteration + 1) % 5000 == 0 or iteration + 1 == iterations:
            adapted_errors(maml, validation, 10)
    test = np.random.default_rng(seed + 2)
    at_k5 = None
    for k_shot in (5, 10, 20):
        errors = adapted_errors(maml, tasks(test, TEST_TASKS, k_shot, QUERY_AT_TEST), max(STEPS))
        at_k5 = errors[10] if k_shot == 5 else at_k5
    return at_k5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    error = run(args.iterations)
    print(f"test MSE after 10 steps at K=5: {error:.4f}; {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
