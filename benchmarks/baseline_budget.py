"""How much pre-training the fine-tuning baseline needs on glyphs before it beats its own initialisation (a linear
probe on random Conv-4 features): test accuracy on the same 100 test episodes every ``--every`` iterations.

    .venv/bin/python -m benchmarks.baseline_budget [--iterations 1000] [--every 250] [--lr 0.001]
"""
from __future__ import annotations

import argparse

import torch

from bench.run.evaluation import evaluate
from bench.run.factory import build_learner, make_optimizer
from bench.run.measure import confidence_interval95
from bench.spec.suite import expand, parse_suite
from meta_bench.datasets import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--lr", type=float, default=0.001)
    args = parser.parse_args()
    suite = parse_suite({"suite": "baseline_budget", "learners": ["finetune"],
                         "training": {"meta_iterations": args.iterations, "meta_batch_size": 4, "query": 5,
                                      "lr": args.lr},
                         "evaluation": {"test_episodes": 100, "query": 5}})
    cell = expand(suite)[0]
    data = load_dataset("glyphs")
    learner = build_learner(cell)
    optimizer = make_optimizer(cell.training, learner.meta_parameters())
    train = data.sampler("train", 5, 1, 5, cell.seed)
    test = data.sampler("test", 5, 1, 5, cell.evaluation.episode_seed)
    cpu = torch.device("cpu")
    print("| meta-iterations | test accuracy (linear probe, 100 episodes) |\n|---|---|")
    for iteration in range(args.iterations + 1):
        if iteration % args.every == 0:
            mean, ci = confidence_interval95(evaluate(learner, test, 100, cpu, torch.float32))
            print(f"| {iteration} | {100 * mean:.2f} ± {100 * ci:.2f}% |", flush=True)
        if iteration < args.iterations:
            optimizer.zero_grad(set_to_none=True)
            learner.meta_gradient(train.batch(iteration * 4, 4))
            optimizer.step()


if __name__ == "__main__":
    main()
