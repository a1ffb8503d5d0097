"""The harness's own cost: one cell under the runner (MLflow logging, measurement hooks, validation and test
evaluation, artifacts) against the bare loop of the same learner doing the same work with none of that.

    .venv/bin/python -m benchmarks.overhead [--learner fomaml/functional] [--iterations 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from bench.run import autotune
from bench.run.evaluation import evaluate
from bench.run.factory import build_learner, dtype_of, make_optimizer
from bench.run.runner import run_suite
from bench.spec.suite import expand, parse_suite
from bench.store import tracking
from meta_bench.datasets import load_dataset


def bare(cell) -> None:
    """What the cell computes, with no clock, hook, progress bar, .item() or logging: the same execution choice as
    the runner's (the autotuner's decision, cached after the first call) and the same evaluation passes."""
    device, dtype = torch.device(cell.device), dtype_of(cell.training)
    data = load_dataset(cell.dataset.name, cell.dataset_options)
    learner = build_learner(cell)
    optimizer = make_optimizer(cell.training, learner.meta_parameters())
    t, e = cell.training, cell.evaluation
    train = data.sampler("train", cell.n_way, cell.k_shot, t.query, cell.seed)
    val = data.sampler("val", cell.n_way, cell.k_shot, e.query, e.episode_seed)
    test = data.sampler("test", cell.n_way, cell.k_shot, e.query, e.episode_seed)
    threads = torch.get_num_threads()
    autotune.decide(learner, cell.learner, "overhead", train.batch(0, t.meta_batch_size).to(device, dtype), device)
    for iteration in range(t.meta_iterations):
        batch = train.batch(iteration * t.meta_batch_size, t.meta_batch_size).to(device, dtype)
        optimizer.zero_grad(set_to_none=True)
        learner.meta_gradient(batch)
        optimizer.step()
        if (iteration + 1) % t.validate_every == 0 or iteration + 1 == t.meta_iterations:
            evaluate(learner, val, t.validation_episodes, device, dtype, per_pass=t.meta_batch_size)
    evaluate(learner, test, e.test_episodes, device, dtype, per_pass=t.meta_batch_size)
    torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--learner", default="fomaml/functional")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    suite = parse_suite({"suite": "overhead", "learners": [args.learner],
                         "training": {"meta_iterations": args.iterations, "meta_batch_size": 4, "query": 5,
                                      "validate_every": 50, "validation_episodes": 20},
                         "evaluation": {"test_episodes": 100, "query": 5}})
    cell = expand(suite)[0]
    bare(cell)  # load data and warm up once
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        tracking.client_for(uri)  # the store is created once, outside the timings
        bare_times, runner_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            bare(cell)
            bare_times.append(time.perf_counter() - start)
            start = time.perf_counter()  # the whole runner path: suite run, claim, cell, logging (forced: runs again)
            (outcome,) = run_suite(suite, "", uri, force=True, progress=False, echo=lambda line: None)
            runner_times.append(time.perf_counter() - start)
            assert outcome.outcome == "finished", outcome.detail
    b, r = statistics.median(bare_times), statistics.median(runner_times)
    print(f"{args.learner}, {args.iterations} meta-iterations + validation + 100 test episodes, "
          f"median of {args.repeats}: bare {b:.2f} s, under the runner {r:.2f} s, overhead {100 * (r - b) / b:+.1f}%")
    print(f"fastest of each: bare {min(bare_times):.2f} s, runner {min(runner_times):.2f} s, overhead "
          f"{100 * (min(runner_times) - min(bare_times)) / min(bare_times):+.1f}%")
    print("bare:", ", ".join(f"{t:.2f}" for t in bare_times), " runner:", ", ".join(f"{t:.2f}" for t in runner_times))


if __name__ == "__main__":
    main()
