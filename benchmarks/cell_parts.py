"""A long sinusoid cell's wall-clock against its parts: what the harness spends outside the meta-iterations,
validation and test (data, autotuning, the per-iteration loop, curves, MLflow).

    .venv/bin/python -m benchmarks.cell_parts [--iterations 10000] [--learner maml]

The cell runs under the real runner (``run_suite``: claim, cell, logging, artifacts) into a fresh SQLite store;
its own metrics give the parts: ``train_seconds_total`` (timed meta-iterations), ``val_seconds_total``,
``eval_seconds_total`` (600 test episodes, 10 adaptation steps) and ``cell_seconds_total`` (``run_cell``, end to end).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bench.core import metrics as m
from bench.core.metrics import SECONDS_TOTAL, phase
from bench.run.runner import run_suite
from bench.spec.suite import parse_suite


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--learner", default="maml")
    args = parser.parse_args()
    suite = parse_suite({
        "suite": "cell-parts", "dataset": {"name": "sinusoid"},
        "learners": [{"name": args.learner, "config": {"inner_lr": 0.01, "eval_inner_steps": 10}}],
        "grid": {"n_way": [1], "k_shot": [10], "devices": ["cpu"], "seeds": [0]},
        "training": {"meta_iterations": args.iterations, "meta_batch_size": 25, "query": 10, "lr": 0.001,
                     "validate_every": 1000, "validation_episodes": 100},
        "evaluation": {"test_episodes": 600, "query": 10}})
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        (outcome,) = run_suite(suite, "", f"sqlite:///{folder}/mlflow.db", progress=False, echo=lambda line: None)
        whole = time.perf_counter() - start
    assert outcome.outcome == "finished", outcome.detail
    metrics = outcome.metrics
    parts = {"timed meta-iterations": metrics[m.TRAIN_SECONDS.name], "validation": metrics[m.VAL_SECONDS],
             "test": metrics[phase("eval", SECONDS_TOTAL)]}
    total, cell = sum(parts.values()), metrics[m.CELL_SECONDS]
    print(f"{args.learner}, sinusoid B=25 K=10, {args.iterations} meta-iterations, validation every 1000 (100 "
          f"episodes), 600 test episodes x 10 steps; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(" + ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items()) + f" = {total:.2f} s")
    print(f"cell wall-clock (run_cell) {cell:.2f} s = {cell / total:.3f}x its parts; "
          f"suite run (store, claim, logging, artifacts) {whole:.2f} s = {whole / total:.3f}x")
    print(f"median meta-iteration {metrics[m.TRAIN_MS.name]:.2f} ms")


if __name__ == "__main__":
    main()
