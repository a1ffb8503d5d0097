"""Two choices behind `fomaml/fast` and `maml/fast`, measured interleaved in one run (median ms over rounds):

1. the support inner steps of all tasks at once (vmap over the meta-batch) against one task at a time, first order;
2. second-order inner steps (with the second-order backward through them) channels-last against contiguous.

    .venv/bin/python -m benchmarks.fast_route [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch
from torch.func import vmap

from bench.run.problems import Problem
from bench.run.measure import PhaseMeter


def support_steps(name: str, k_shot: int, steps: int, batched: bool, second_order: bool, layout: bool = True):
    """All tasks' inner loops (plus, second order, the backward through them to theta), as one callable."""
    problem = Problem("glyphs", 5, k_shot, query=15, tasks=32, inner_steps=steps)
    batch, learner = problem.batch(), problem.learner(name)
    theta = dict(learner.model.named_parameters())
    loss_of = partial(learner._loss, k_shot=k_shot)
    forward = partial(learner.fast_forward, in_channels_last=layout)

    def run():
        if batched:
            params = {name: p.expand(len(batch), *p.shape) for name, p in theta.items()}
            parts = [(params, vmap(forward), vmap(loss_of), batch.support_x, batch.support_y)]
        else:
            parts = [(theta, forward, loss_of, batch.task(t).support_x, batch.task(t).support_y)
                     for t in range(len(batch))]
        for params, fwd, losses, x, y in parts:
            adapted, _ = learner._inner_loop(params, fwd, losses, x, y, steps, create_graph=second_order)
            if second_order:
                torch.autograd.grad(sum(p.sum() for p in adapted.values()), list(theta.values()))
    return run


def interleaved(arms: dict, rounds: int) -> None:
    """Each arm's warm-up, then ``rounds`` rounds of one timed call per arm: the machine's drift hits every arm."""
    meters = {label: PhaseMeter(torch.device("cpu"), warmup=1) for label in arms}
    for _ in range(rounds + 1):
        for label, run in arms.items():
            with meters[label].step():
                run()
    for label, meter in meters.items():
        print(f"| {label} | {statistics.median(meter.times) * 1000:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, B=32, Q=15, fp32\n")
    print("| support inner steps, fomaml/fast | ms (median) |\n|---|---|")
    for k, s in ((1, 1), (5, 5)):
        interleaved({f"5w{k}s S={s}, one task at a time": support_steps("fomaml/fast", k, s, False, False),
                     f"5w{k}s S={s}, vmap over the 32 tasks": support_steps("fomaml/fast", k, s, True, False)},
                    args.rounds)
    print("\n| second-order inner steps and their backward, maml/fast, one task at a time | ms (median) |\n|---|---|")
    for k, s in ((1, 1), (5, 5)):
        interleaved({f"5w{k}s S={s}, contiguous": support_steps("maml/fast", k, s, False, True, layout=False),
                     f"5w{k}s S={s}, channels-last": support_steps("maml/fast", k, s, False, True, layout=True)},
                    args.rounds)


if __name__ == "__main__":
    main()
