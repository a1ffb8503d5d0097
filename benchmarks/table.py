"""The speed and memory table of the README: every learner, wall-clock per meta-iteration and peak bytes saved for
backward, at 5-way 1-shot (B=32, S=1) and 5-way 5-shot (B=32, S=5) on glyphs with 15 queries per class, scaling
with S in {1, 2, 5, 10}; the floor; the cost of assembling a batch.

    .venv/bin/python benchmarks/table.py [--iterations 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algorithms import LEARNERS  # noqa: E402
from bench.measure import PhaseMeter, cpu_model, saved_bytes_of, synchronize  # noqa: E402
from benchmarks.conftest import learner_on_glyphs, meta_iteration  # noqa: E402
from datasets import load_dataset  # noqa: E402


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


def measure(name: str, k_shot: int, steps: int, iterations: int, device: torch.device, **options):
    data = load_dataset("glyphs")
    batch = data.sampler("train", 5, k_shot, 15, seed=0).batch(0, 32).to(device)
    learner = learner_on_glyphs(name, inner_steps=steps, device=device, **options)
    step = meta_iteration(learner, batch)
    saved = saved_bytes_of(step)
    meter = PhaseMeter(device, warmup=1)
    for _ in range(iterations + 1):
        with meter.step():
            step()
    return statistics.median(meter.times), saved


def flops_of(name: str, k_shot: int, steps: int) -> float:
    data = load_dataset("glyphs")
    batch = data.sampler("train", 5, k_shot, 15, seed=0).batch(0, 32)
    learner = learner_on_glyphs(name, inner_steps=steps)
    counter = FlopCounterMode(display=False)
    with counter:
        meta_iteration(learner, batch)()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--learners", default=",".join(LEARNERS.names()))
    parser.add_argument("--steps", default="1,2,5,10")
    args = parser.parse_args()
    device = torch.device(args.device)
    names = args.learners.split(",")
    print(f"device: {device} ({cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    rate = matmul_rate(device)
    print(f"measured fp32 matmul rate: {rate / 1e9:.1f} GFLOP/s (2048^3, median of 10)")
    data = load_dataset("glyphs")
    sampler = data.sampler("train", 5, 1, 15, seed=0)
    times = []
    for i in range(20):
        start = time.perf_counter()
        sampler.batch(32 * i, 32)
        times.append(time.perf_counter() - start)
    print(f"batch assembly, 32 episodes of 5-way 1-shot 15-query: {statistics.median(times) * 1000:.2f} ms (median of 20)")
    for k, s in ((1, 1), (5, 5)):
        floor_flops = flops_of("fomaml/functional", k, s)
        print(f"\n5-way {k}-shot, B=32, S={s}, Q=15: FOMAML FLOPs per meta-iteration (FlopCounterMode) "
              f"{floor_flops / 1e9:.1f} GFLOP -> floor {floor_flops / rate * 1000:.0f} ms at the measured rate")
        print("| learner | ms / meta-iteration (median) | x floor | peak saved-for-backward MB |")
        print("|---|---|---|---|")
        for name in names:
            seconds, saved = measure(name, k, s, args.iterations, device)
            print(f"| {name} | {seconds * 1000:.0f} | {seconds / (floor_flops / rate):.1f} | {saved / 1e6:.1f} |",
                  flush=True)
    steps = [int(s) for s in args.steps.split(",")]
    print("\nscaling with S, 5-way 1-shot, B=32, Q=15: ms / meta-iteration and peak saved MB")
    print("| learner | " + " | ".join(f"S={s}" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name in names:
        if "inner_steps" not in LEARNERS[name].Config.__dataclass_fields__:
            continue
        cells = [measure(name, 1, s, args.iterations, device) for s in steps]
        print(f"| {name} | " + " | ".join(f"{t * 1000:.0f} ms, {b / 1e6:.0f} MB" for t, b in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
