"""The speed and memory table of the README, all in one process: the fp32 matrix-multiply rate (the floor is an
iteration's FLOPs at that rate), the plain reference implementations of ``benchmarks/plain.py`` (what a user writes
without this project), and every learner: wall-clock per meta-iteration, x floor, speed-up over the fastest plain
reference of the same order, peak bytes saved for backward. Glyphs, Conv-4, 15 queries per class, at 5-way 1-shot
(B=32, S=1), 20-way 1-shot (B=16, S=5) and 5-way 5-shot (B=32, S=5); the vmap rows (the memory comparison) at the
first; then scaling with S. Then the sinusoid MLP of Finn et al. (``sinusoid_section``): every learner with its
default options (``task_batching: auto`` decided by ``bench/run/autotune.py`` as a cell would), the loop that was the
default before, and the hand-written batched references; then 600 test episodes with 10 adaptation steps.

    .venv/bin/python -m benchmarks.table [--iterations 3] [--device cpu] [--learners a,b] [--steps 1,2,5,10]
                                         [--sections glyphs,sinusoid]
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.consumers.verify import relative_difference
from bench.core.hardware import cpu_model
from bench.run import autotune
from bench.run.evaluation import evaluate
from bench.run.measure import synchronize, time_steps
from bench.run.problems import Problem, meta_iteration
from benchmarks.plain import batched_mlp_references, plain_references
from meta_bench.algorithms import LEARNERS
from meta_bench.algorithms.base import algorithm_of
from meta_bench.datasets import Episode, load_dataset

QUERY = 15
AUTOTUNE_SCRATCH = Path(tempfile.mkdtemp()) / "autotune.json"  # every run measures afresh: a table is a measurement
CONFIGS = ((5, 1, 32, 1), (20, 1, 16, 5), (5, 5, 32, 5))  # n_way, k_shot, tasks, inner steps
VMAP_ROWS = ("fomaml/functional", "fomaml/fast", "maml", "maml/fast")
SCALING = ("fomaml/functional", "fomaml/fast", "maml", "maml/fast")


def matmul_rate(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def batch_for(n_way: int, k_shot: int, tasks: int, device: torch.device) -> Episode:
    return Problem("glyphs", n_way, k_shot, query=QUERY, tasks=tasks).batch(device=device)


def timed(step: Callable[[], None], iterations: int, device: torch.device) -> tuple[float, int]:
    """Median seconds of ``iterations`` timed steps after one untimed, and the peak bytes saved for backward."""
    meter = time_steps(step, iterations, device)
    return statistics.median(meter.times), meter.saved_bytes_peak


def learner_for(name: str, n_way: int, steps: int, device: torch.device, **options):
    return Problem("glyphs", n_way, inner_steps=steps).learner(name, device=device, **options)


def reference_step(reference, batch: Episode) -> Callable[[], None]:
    def step():
        for p in reference.model.parameters():
            p.grad = None
        reference.meta_gradient(batch.support_x, batch.support_y, batch.query_x, batch.query_y)
    return step


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def flops_of(n_way: int, k_shot: int, tasks: int, steps: int) -> float:
    batch = batch_for(n_way, k_shot, tasks, torch.device("cpu"))
    learner = learner_for("fomaml/functional", n_way, steps, torch.device("cpu"))
    counter = FlopCounterMode(display=False)
    with counter:
        meta_iteration(learner, batch)()
    return counter.get_total_flops()


ORDERS = {"fomaml": "FOMAML", "maml": "MAML"}  # a learner's rows are compared with plain references of its order
MATCHING_LEARNER = {"FOMAML": "fomaml/functional", "MAML": "maml"}  # what a plain reference's gradient must equal


def configuration(n_way: int, k_shot: int, tasks: int, steps: int, names: list[str], vmap: bool,
                  iterations: int, device: torch.device, rate: float) -> None:
    floor = flops_of(n_way, k_shot, tasks, steps) / rate
    print(f"\n{n_way}-way {k_shot}-shot, B={tasks}, S={steps}, Q={QUERY}: FOMAML floor {floor * 1000:.0f} ms "
          f"(FlopCounterMode FLOPs at the measured rate)")
    batch = batch_for(n_way, k_shot, tasks, device)
    rows, grads, orders = {}, {}, {}
    first = learner_for("fomaml/functional", n_way, steps, device)
    references = plain_references(first.model, first.config.inner_lr, steps)
    for label, reference in references.items():
        rows[label] = timed(reference_step(reference, batch), iterations, device)
        grads[label], orders[label] = flat_grad(reference.model), reference.order
    runs = [(name, {}) for name in names]
    runs += [(name, {"task_batching": "vmap"}) for name in VMAP_ROWS if vmap and name in names]
    for name, options in runs:
        learner = learner_for(name, n_way, steps, device, **options)
        label = f"{name} (vmap)" if options else name
        rows[label] = timed(meta_iteration(learner, batch), iterations, device)
        orders[label] = ORDERS.get(algorithm_of(name))
        if label in MATCHING_LEARNER.values():
            grads[label] = flat_grad(learner.model)
    for label, reference in references.items():
        match = MATCHING_LEARNER[reference.order]
        if match in grads:  # the references compute the learners' meta-gradient (fp32 rounding apart)
            print(f"{label}: meta-gradient vs {match} rel diff {relative_difference(grads[label], grads[match]):.1e}")
    fastest = {order: min(rows[label][0] for label, reference in references.items() if reference.order == order)
               for order in MATCHING_LEARNER}
    print("| implementation | ms / meta-iteration (median) | x floor | speed-up over the fastest plain reference "
          "of its order | peak saved-for-backward MB |")
    print("|---|---|---|---|---|")
    for label, (seconds, saved) in rows.items():
        order = orders[label]
        speedup = f"{fastest[order] / seconds:.2f}x" if order else "-"
        print(f"| {label} | {seconds * 1000:.0f} | {seconds / floor:.2f} | {speedup} | {saved / 1e6:.1f} |",
              flush=True)


SINUSOID = Problem("sinusoid", 1, 10, query=10, tasks=25, inner_steps=1, name="Finn et al.: B=25, K=10, S=1")
SINUSOID_LR = 0.01


def best_over_threads(step: Callable[[], None], iterations: int, device: torch.device) -> tuple[float, int]:
    """Median seconds of ``step`` at its fastest intra-op thread count (1..the process's), and that count: a
    reference is held to the same thread choice the autotuner makes for the learners."""
    budget, best = torch.get_num_threads(), (math.inf, 0)
    try:
        for threads in range(1, budget + 1) if device.type == "cpu" else [budget]:
            torch.set_num_threads(threads)
            best = min(best, (timed(step, iterations, device)[0], threads))
    finally:
        torch.set_num_threads(budget)
    return best


def sinusoid_section(names: list[str], iterations: int, device: torch.device) -> None:
    """Every learner on the sinusoid MLP against the hand-written batched references of its order."""
    problem, budget = SINUSOID, torch.get_num_threads()
    batch = problem.batch(device=device)
    print(f"\nsinusoid regression, {problem.name}, Q=10, inner lr {SINUSOID_LR}, fp32; thread counts 1..{budget} "
          f"tried for every row")
    rows, ran = {}, {}
    for label, reference in batched_mlp_references(problem.model().to(device), SINUSOID_LR, 1).items():
        rows[label] = (*best_over_threads(reference_step(reference, batch), iterations, device), reference.order)
        ran[label] = "-"
    for name in names:
        if "regression" not in LEARNERS[name].kinds:
            continue
        options = {"inner_lr": SINUSOID_LR} if "inner_lr" in LEARNERS[name].Config.__dataclass_fields__ else {}
        variants = [("", options)]
        if "task_batching" in LEARNERS[name].Config.__dataclass_fields__:
            variants.append((" (loop: the default before autotuning)", {**options, "task_batching": "loop"}))
        for suffix, chosen in variants:
            learner = problem.learner(name, device=device, **chosen)
            decision = autotune.decide(learner, name, "benchmark", batch, device, budget, cache=AUTOTUNE_SCRATCH)
            try:
                seconds = timed(meta_iteration(learner, batch), iterations, device)[0]
            finally:
                torch.set_num_threads(budget)
            execution = learner.execution(len(batch), device)
            rows[name + suffix] = (seconds, decision.threads, ORDERS.get(algorithm_of(name)))
            ran[name + suffix] = (" ".join(f"{k}={v}" for k, v in execution.items()) or "-") + f" ({decision.how})"
    reference_of = {order: rows[f"hand-written batched {order}, baddbmm"][0] for order in ("FOMAML", "MAML")}
    print("| implementation | ms / meta-iteration (median) | threads | x the batched reference of its order | "
          "what ran |")
    print("|---|---|---|---|---|")
    for label, (seconds, threads, order) in rows.items():
        ratio = f"{seconds / reference_of[order]:.2f}x" if order in reference_of else "-"
        print(f"| {label} | {seconds * 1000:.2f} | {threads} | {ratio} | {ran[label]} |", flush=True)
    test_episodes(iterations, device)


def test_episodes(repeats: int, device: torch.device, episodes: int = 600, steps: int = 10) -> None:
    """600 sinusoid test episodes, 10 adaptation steps each: in passes of the meta-batch (as cells evaluate now) and
    one episode at a time (as before), for `maml` as the autotuner runs it."""
    problem, budget = SINUSOID, torch.get_num_threads()
    source = load_dataset("sinusoid").sampler("test", 1, 10, 10, seed=0)
    learner = problem.learner("maml", device=device, inner_lr=SINUSOID_LR, eval_inner_steps=steps)
    decision = autotune.decide(learner, "maml", "benchmark", problem.batch(device=device), device, budget,
                               cache=AUTOTUNE_SCRATCH)
    try:
        for per_pass in (problem.tasks, 1):
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                evaluate(learner, source, episodes, device, torch.float32, per_pass=per_pass)
                synchronize(device)
                seconds.append(time.perf_counter() - start)
            print(f"{episodes} test episodes x {steps} steps, {per_pass} per pass "
                  f"({autotune.label(decision.choice, decision.threads) if decision.choice else '-'}): "
                  f"{statistics.median(seconds):.2f} s (median of {repeats})", flush=True)
    finally:
        torch.set_num_threads(budget)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--learners", default=",".join(LEARNERS.names()))
    parser.add_argument("--steps", default="1,2,5,10")
    parser.add_argument("--sections", default="glyphs,sinusoid")
    args = parser.parse_args()
    device = torch.device(args.device)
    names = args.learners.split(",")
    print(f"device: {device} ({cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if "sinusoid" in args.sections.split(","):
        sinusoid_section(names, args.iterations, device)
    if "glyphs" not in args.sections.split(","):
        return
    rate = matmul_rate(device)
    print(f"measured fp32 matmul rate: {rate / 1e9:.1f} GFLOP/s (2048^3, 10 repeats)")
    sampler = load_dataset("glyphs").sampler("train", 5, 1, QUERY, seed=0)
    times = []
    for i in range(20):
        start = time.perf_counter()
        sampler.batch(32 * i, 32)
        times.append(time.perf_counter() - start)
    print(f"batch assembly, 32 episodes of 5-way 1-shot 15-query: {statistics.median(times) * 1000:.2f} ms (median of 20)")
    for i, (n_way, k_shot, tasks, steps) in enumerate(CONFIGS):
        configuration(n_way, k_shot, tasks, steps, names, i == 0, args.iterations, device, rate)
    steps = [int(s) for s in args.steps.split(",")]
    print("\nscaling with S, 5-way 1-shot, B=32, Q=15: ms / meta-iteration and peak saved MB")
    print("| implementation | " + " | ".join(f"S={s}" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    batch = batch_for(5, 1, 32, device)
    for name in SCALING:
        cells = [timed(meta_iteration(learner_for(name, 5, s, device), batch), args.iterations, device)
                 for s in steps]
        print(f"| {name} | " + " | ".join(f"{t * 1000:.0f} ms, {b / 1e6:.0f} MB" for t, b in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
