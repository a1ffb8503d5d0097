"""The autotuner's race against timing every candidate in full, on the cells of ``benchmarks.end_to_end``: seconds
spent deciding, the candidate chosen, and its regret (its full median time over the fastest one's), in one process.

"Every candidate in full" is what the autotuner did before the race: under each thread count, each execution choice
warmed up once and then timed ``TIMED_ITERATIONS`` times; its medians are the yardstick of the regret.

    .venv/bin/python -m benchmarks.autotune_race [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.run import autotune
from bench.run.factory import build_learner
from bench.run.measure import time_steps
from bench.run.problems import load_dataset, meta_iteration
from bench.spec.suite import expand, parse_suite
from benchmarks.end_to_end import finn_maml_cell, glyphs_cell

CPU = torch.device("cpu")


def _in_full(learner, batch, budget: int) -> tuple[float, dict[str, float]]:
    """Seconds to time every candidate in full, and each one's median milliseconds."""
    started, medians = time.perf_counter(), {}
    for count in range(1, budget + 1):
        torch.set_num_threads(count)
        for choice in learner.execution_candidates(len(batch), CPU):
            learner.use_execution(choice)
            steps = time_steps(meta_iteration(learner, batch), autotune.TIMED_ITERATIONS, CPU).times
            medians[autotune.label(choice, count)] = statistics.median(steps) * 1000
    torch.set_num_threads(budget)
    return time.perf_counter() - started, medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    budget = torch.get_num_threads()
    cells = {"glyphs Conv-4 5-way 1-shot fomaml/functional": glyphs_cell("race", "fomaml/functional", 10, 10),
             "glyphs Conv-4 5-way 1-shot maml": glyphs_cell("race", "maml", 10, 10),
             "sinusoid maml (Finn, K 10)": finn_maml_cell("race", 10)}
    for title, raw in cells.items():
        (cell,) = expand(parse_suite(raw))
        data = load_dataset(cell.dataset.name, cell.dataset_options)
        learner = build_learner(cell)
        batch = data.sampler("train", cell.n_way, cell.k_shot, cell.train_query, cell.seed).batch(
            0, cell.training.meta_batch_size)
        full, race = [], []
        for _ in range(args.repeats):  # alternating, the race first: its first repeat meets the learner cold, as a cell
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                decision = autotune.decide(learner, cell.learner, "race", batch, CPU, budget, Path(folder) / "a.json")
                race.append((time.perf_counter() - started, autotune.label(decision.choice, decision.threads)))
            torch.set_num_threads(budget)
            full.append(_in_full(learner, batch, budget))
        print(f"{title}, {budget} threads at most")
        for (seconds, medians), (raced, chosen) in zip(full, race):
            fastest = min(medians, key=medians.get)
            print(f"  in full {seconds:6.2f} s, fastest {fastest} | race {raced:6.2f} s, chose {chosen}, regret "
                  f"{medians[chosen] / medians[fastest]:.3f}")


if __name__ == "__main__":
    main()
