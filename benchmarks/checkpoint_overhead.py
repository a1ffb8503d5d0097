"""What checkpointing costs a cell: the same cell with checkpoints never written and written after every
meta-iteration (``training.checkpoint_every: 0``, the worst case), alternating, in one process; and the time of one
checkpoint write. At the default (one write every 300 s) the cost per meta-iteration is one write's time divided by
the iterations of 300 s.

    .venv/bin/python -m benchmarks.checkpoint_overhead [--repeats 3] [--sinusoid-iterations 2000]
                                                       [--glyphs-iterations 100]

Cells: the Finn et al. sinusoid MAML cell (meta-batch 25, one second-order step, K = 10) and glyphs Conv-4 MAML
5-way 1-shot (meta-batch 4, 15 queries), each without test episodes (training is what a checkpoint slows).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from bench.core import metrics as m
from bench.core.seeding import random_states
from bench.run import checkpoint
from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite


def _cells(sinusoid_iterations: int, glyphs_iterations: int) -> dict[str, dict]:
    base = {"suite": "checkpoint-overhead", "grid": {"devices": ["cpu"], "seeds": [0]}}
    return {
        "sinusoid MAML (Finn), K=10": {**base, "dataset": {"name": "sinusoid"},
                                       "learners": [{"name": "maml", "config": {"inner_lr": 0.01, "inner_steps": 1}}],
                                       "grid": {**base["grid"], "n_way": [1], "k_shot": [10]},
                                       "backbone": {"hidden": 40},
                                       "training": {"meta_iterations": sinusoid_iterations, "meta_batch_size": 25,
                                                    "query": 10, "validate_every": sinusoid_iterations,
                                                    "validation_episodes": 10}},
        "glyphs Conv-4 MAML 5-way 1-shot": {**base, "dataset": {"name": "glyphs"}, "learners": ["maml"],
                                            "grid": {**base["grid"], "n_way": [5], "k_shot": [1]},
                                            "training": {"meta_iterations": glyphs_iterations, "meta_batch_size": 4,
                                                         "query": 15, "validate_every": glyphs_iterations,
                                                         "validation_episodes": 5}},
    }


def _seconds_per_iteration(raw: dict, every: float) -> float:
    cell = expand(parse_suite({**raw, "training": {**raw["training"], "checkpoint_every": every}}))[0]
    start = time.perf_counter()
    run_cell(cell, test=False)
    return (time.perf_counter() - start) / cell.training.meta_iterations


def _write_ms(raw: dict) -> float:
    """One checkpoint write of the cell's state, as the loop writes it (the median of 5)."""
    cell = expand(parse_suite(raw))[0]
    trained = run_cell(expand(parse_suite({**raw, "training": {**raw["training"], "meta_iterations": 3,
                                                                          "validate_every": 3}}))[0],
                       test=False).state_dict
    state = {"learner": trained, "adam": {"exp_avg": trained, "exp_avg_sq": trained}}  # Adam keeps two per weight
    path = checkpoint.folder() / f"{cell.suite}-write.pt"
    times = []
    for _ in range(5):
        start = time.perf_counter()
        checkpoint.save(path, {**state, "random": random_states()})
        times.append(time.perf_counter() - start)
    checkpoint.remove(path)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sinusoid-iterations", type=int, default=2000)
    parser.add_argument("--glyphs-iterations", type=int, default=100)
    args = parser.parse_args()
    os.environ["METABENCH_CHECKPOINTS"] = tempfile.mkdtemp()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    print("| cell | ms / meta-iteration, no checkpoint | with a checkpoint after every iteration | overhead | "
          "one write (ms) | overhead at the default (one write / 300 s) |")
    print("|---|---|---|---|---|---|")
    for name, raw in _cells(args.sinusoid_iterations, args.glyphs_iterations).items():
        never, every = [], []
        _seconds_per_iteration(raw, 1e9)  # untimed: the data loaded, the execution decided and cached
        for _ in range(args.repeats):  # alternating: the machine's drift lands on both
            never.append(_seconds_per_iteration(raw, 1e9))
            every.append(_seconds_per_iteration(raw, 0.0))
        base, worst, write = statistics.median(never) * 1000, statistics.median(every) * 1000, _write_ms(raw)
        print(f"| {name} | {base:.2f} (spread {min(never) * 1000:.2f}-{max(never) * 1000:.2f}) | {worst:.2f} "
              f"(spread {min(every) * 1000:.2f}-{max(every) * 1000:.2f}) | {worst / base - 1:+.0%} | {write:.1f} | "
              f"{write / 300e3:.1e} of the time |")
    print(f"(medians of {args.repeats} alternating runs each; {m.CELL_SECONDS} includes autotuning, equal in both)")


if __name__ == "__main__":
    main()
