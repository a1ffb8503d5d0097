"""The hand-written script a researcher would write for one glyphs Conv-4 cell, 5-way 1-shot, FOMAML or MAML, with
no harness: the yardstick `bench run` is held to (``benchmarks.end_to_end``). The same work as the cell
``benchmarks.end_to_end.glyphs_cell`` describes, with the suite defaults it leaves alone: meta-batches of 4 tasks (15
query images per class), one inner SGD step of 0.4 on the mean cross-entropy, batch norm adapted, Adam 1e-3; 20
validation episodes every 50 meta-iterations and at the end, then the test episodes, each adapted for 3 steps and
scored by query accuracy. The episodes are the project's own (its glyphs sampler, by index, as the cell draws them)
and so is the Conv-4 with its seed's initial weights: the script differs from the cell in everything around them (a
plain per-task loop, ``plain.PlainAutogradMAML``, no store, no measurement). Prints the test accuracy, near the
cell's (equal to 0.001 after 10 meta-iterations; float32 sums in another order drift apart over a longer training),
and the seconds it took.

    .venv/bin/python -m benchmarks.handwritten_glyphs [--iterations 200] [--test-episodes 200] [--second-order]
        [--device cuda]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from benchmarks.plain import PlainAutogradMAML
from meta_bench.algorithms.backbones import BackboneConfig, build_model
from meta_bench.datasets import DATASETS, load_dataset
from meta_bench.datasets.episode import Episode

N_WAY, K_SHOT, QUERY, META_BATCH, INNER_LR, TEST_STEPS = 5, 1, 15, 4, 0.4, 3
VALIDATE_EVERY, VALIDATION_EPISODES = 50, 20


def adapted_accuracy(model: nn.Module, episode: Episode, steps: int) -> float:
    """Query accuracy of one episode after ``steps`` first-order SGD steps on its support set."""
    fast = {name: p.detach().requires_grad_() for name, p in model.named_parameters()}
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(model, fast, (episode.support_x,)), episode.support_y)
        grads = torch.autograd.grad(loss, list(fast.values()))
        fast = {name: (p - INNER_LR * g).detach().requires_grad_() for (name, p), g in zip(fast.items(), grads)}
    with torch.no_grad():
        predicted = functional_call(model, fast, (episode.query_x,)).argmax(dim=-1)
    return (predicted == episode.query_y).float().mean().item()


def run(iterations: int, test_episodes: int, second_order: bool, seed: int = 0, device: str = "cpu") -> float:
    glyphs = load_dataset("glyphs")
    entry = DATASETS["glyphs"]
    model = build_model(entry.backbone, glyphs.input_shape, N_WAY, BackboneConfig(), entry.conv_filters, seed)
    model = model.to(device)
    maml = PlainAutogradMAML(model, INNER_LR, 1, second_order)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = glyphs.sampler("train", N_WAY, K_SHOT, QUERY, seed)
    validation = glyphs.sampler("val", N_WAY, K_SHOT, QUERY, 0)
    for iteration in range(iterations):
        batch = train.batch(iteration * META_BATCH, META_BATCH).to(device)
        optimizer.zero_grad(set_to_none=True)
        maml.meta_gradient(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        optimizer.step()
        if (iteration + 1) % VALIDATE_EVERY == 0 or iteration + 1 == iterations:
            [adapted_accuracy(model, validation.episode(i).to(device), TEST_STEPS) for i in range(VALIDATION_EPISODES)]
    test = glyphs.sampler("test", N_WAY, K_SHOT, QUERY, 0)
    return sum(adapted_accuracy(model, test.episode(i).to(device), TEST_STEPS)
               for i in range(test_episodes)) / test_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--test-episodes", type=int, default=200)
    parser.add_argument("--second-order", action="store_true", help="MAML (else FOMAML)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    accuracy = run(args.iterations, args.test_episodes, args.second_order, device=args.device)
    print(f"test accuracy {accuracy:.4f}; {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
