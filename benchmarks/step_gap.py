"""Inside the training loop, in one process: a sinusoid MAML cell's meta-iterations (``run_cell``, no test; its phase
clock) against the hand-written script's loop (``benchmarks.handwritten_sinusoid``: tasks drawn a batch at a time,
``plain.BatchedMLPMAML``, Adam), per meta-iteration, at 2 intra-op threads, alternating.

    .venv/bin/python -m benchmarks.step_gap [--iterations 2000] [--repeats 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.core import metrics as m
from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite
from benchmarks.end_to_end import finn_maml_cell
from benchmarks.handwritten_sinusoid import INNER_LR, META_BATCH, model, tasks
from benchmarks.plain import BatchedMLPMAML

def _script_loop(iterations: int) -> tuple[float, float]:
    rng, net = np.random.default_rng(0), model()
    maml, optimizer = BatchedMLPMAML(net, INNER_LR, 1, True), torch.optim.Adam(net.parameters(), 1e-3)
    drawing = stepping = 0.0
    for _ in range(iterations):
        started = time.perf_counter()
        batch = tasks(rng, META_BATCH, 10, 10)
        drawn = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        maml.meta_gradient(*batch)
        optimizer.step()
        drawing, stepping = drawing + drawn - started, stepping + time.perf_counter() - drawn
    return drawing / iterations, stepping / iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    raw = finn_maml_cell("step_gap", args.iterations)
    (cell,) = expand(parse_suite({**raw, "training": {**raw["training"], "validate_every": args.iterations}}))
    n = args.iterations
    for _ in range(args.repeats):
        result = run_cell(cell, test=False)
        per = {phase: result.metrics[m.time_in(phase)] / n * 1e3 for phase in ("steps", "sampling", "between")}
        drawing, stepping = _script_loop(n)
        print(f"cell ({result.execution.get('task_batching')}): meta-iteration {per['steps']:.3f} ms, drawing "
              f"{per['sampling']:.3f} ms, between {per['between']:.3f} ms | script: step {stepping * 1e3:.3f} ms, "
              f"drawing {drawing * 1e3:.3f} ms | loop ratio "
              f"{sum(per.values()) / ((drawing + stepping) * 1e3):.3f}")


if __name__ == "__main__":
    main()
