"""The quickstart's cells on every device given (cpu, cuda), without MLflow, with what the autotuner chose for each,
plus loop-vs-vmap task batching of the functional learners and the autotuner's own measurement of every candidate
(``bench/run/autotune.py``), and end to end on each device but the CPU: `bench run` of the glyphs Conv-4 FOMAML and
MAML cells against the hand-written script on the same device (``benchmarks.end_to_end.glyphs``): the check a lent
GPU machine runs in one go (see the README's Measurement section).

    python -m benchmarks.device_check --devices cpu,cuda [--batching-on cuda] [--shapes 1x1,5x5]
        [--end-to-end-on cuda] [--end-to-end-iterations 200] [--end-to-end-test-episodes 200]
        [--end-to-end-repeats 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch

from bench.core import metrics
from bench.core.hardware import device_description
from bench.run import autotune
from bench.run.measure import time_steps
from bench.run.problems import Problem, meta_iteration
from bench.run.training import run_cell
from bench.spec.suite import expand, load_suites
from benchmarks import end_to_end
from meta_bench.datasets import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def quickstart(devices: list[str]) -> None:
    suite = load_suites(ROOT / "suites" / "quickstart.yaml")[0]
    print("| learner | device | test accuracy | ms / meta-iter (median) | p90 | eval ms / episode | saved MB | "
          "CUDA peak MB | meta-train s | what ran |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for cell in expand(suite):
            cell = dataclasses.replace(cell, device=device)
            result = run_cell(cell)
            got, ran = result.metrics, result.execution
            score = metrics.format_score("accuracy", got[metrics.SCORES["accuracy"].name], got[metrics.ci95("accuracy")])
            costs = " | ".join(metric.format(got.get(metric.name)) for metric in (
                metrics.TRAIN_MS, metrics.TRAIN_MS_P90, metrics.EVAL_MS, metrics.SAVED_MB, metrics.CUDA_MB,
                metrics.TRAIN_SECONDS))
            what = f"{ran.get('task_batching', '-')}/{ran.get('vmap_chunk', '-')} t{ran['threads']} ({ran['autotune']})"
            print(f"| {cell.label} | {device} | {score} | {costs} | {what} |", flush=True)


def autotuned(device: torch.device, shapes: list[tuple[int, int]]) -> None:
    """The autotuner's decision for each functional learner and shape, with every timed candidate's median or one
    time (the same race a cell runs before it trains; a scratch cache, so measured here and now)."""
    data = load_dataset("glyphs")
    cache = Path(tempfile.mkdtemp()) / "autotune.json"
    print("\n| learner | shape | chosen | every timed candidate: ms / meta-iter (median of 3, or its one time) |")
    print("|---|---|---|---|")
    for name in ("fomaml/functional", "fomaml/fast", "maml", "maml/fast"):
        for k, s in shapes:
            batch = data.sampler("train", 5, k, 15, seed=0).batch(0, 32).to(device)
            learner = Problem("glyphs", inner_steps=s).learner(name, device=device)
            threads = torch.get_num_threads()
            try:
                decision = autotune.decide(learner, name, "device-check", batch, device, cache=cache)
            finally:
                torch.set_num_threads(threads)
            times = ", ".join(f"{label} {ms:.1f}" for label, ms in decision.times_ms.items())
            print(f"| {name} | 5w{k}s B=32 S={s} | {autotune.label(decision.choice, decision.threads)} | {times} |",
                  flush=True)


def batching(device: torch.device, iterations: int = 5) -> None:
    data = load_dataset("glyphs")
    print("\n| learner | shape | task_batching | ms / meta-iter (median) | saved MB | CUDA peak MB |")
    print("|---|---|---|---|---|---|")
    for name in ("fomaml/functional", "fomaml/fast", "maml", "maml/fast"):
        for k, s in ((1, 1), (5, 5)):
            batch = data.sampler("train", 5, k, 15, seed=0).batch(0, 32).to(device)
            for mode, chunk in (("loop", 0), ("vmap", 0), ("vmap", 8)):
                learner = Problem("glyphs", inner_steps=s).learner(name, device=device, task_batching=mode,
                                                                   vmap_chunk=chunk)
                try:
                    meter = time_steps(meta_iteration(learner, batch), iterations, device)
                    saved = meter.saved_bytes_peak
                    cuda = metrics.CUDA_MB.format(meter.summary("train").get(metrics.CUDA_MB.name))
                    print(f"| {name} | 5w{k}s B=32 S={s} | {mode}{f' chunk {chunk}' if chunk else ''} | "
                          f"{statistics.median(meter.times) * 1000:.1f} | {saved / 1e6:.0f} | {cuda} |", flush=True)
                except torch.cuda.OutOfMemoryError as error:
                    torch.cuda.empty_cache()
                    print(f"| {name} | 5w{k}s B=32 S={s} | {mode} | out of memory: {str(error)[:80]} | | |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", default="cpu")
    parser.add_argument("--batching-on", default="", help="devices for the loop-vs-vmap table (default: all but cpu)")
    parser.add_argument("--shapes", default="1x1,5x5", help="K-shot x inner steps of the autotuning table")
    parser.add_argument("--no-quickstart", action="store_true")
    parser.add_argument("--end-to-end-on", default=None, help="devices of the end-to-end yardstick (default: all but "
                                                               "cpu; '' for none)")
    parser.add_argument("--end-to-end-iterations", type=int, default=200)
    parser.add_argument("--end-to-end-test-episodes", type=int, default=200)
    parser.add_argument("--end-to-end-repeats", type=int, default=2)
    args = parser.parse_args()
    devices = args.devices.split(",")
    for device in devices:
        print(f"{device}: {device_description(torch.device(device))}")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}\n")
    if not args.no_quickstart:
        quickstart(devices)
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    for device in args.batching_on.split(",") if args.batching_on else [d for d in devices if d != "cpu"]:
        autotuned(torch.device(device), shapes)
        batching(torch.device(device))
    yardstick = [d for d in devices if d != "cpu"] if args.end_to_end_on is None else \
        [d for d in args.end_to_end_on.split(",") if d]
    for device in yardstick:
        print(f"\nend to end on {device}: `bench run` against the hand-written script")
        end_to_end.glyphs(args.end_to_end_iterations, args.end_to_end_test_episodes, args.end_to_end_repeats,
                          device)


if __name__ == "__main__":
    main()
