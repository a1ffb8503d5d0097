"""Wall-clock of one suite of equal CPU cells, in process and on Ray, measured in one run (README: "Many GPUs, many
machines"). Each executor gets a fresh MLflow store, so nothing is reused.

    .venv/bin/python -m benchmarks.executors [--cells 8] [--parallel 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import yaml

from bench.run.executors.ray_tasks import RayExecutor, RayOptions
from bench.run.runner import run_suite
from bench.spec.suite import parse_suite


def equal_cells(cells: int) -> dict:
    """``cells`` cells of the same work (one learner, one condition, ``cells`` seeds)."""
    return {"suite": "executors", "dataset": {"name": "glyphs"}, "learners": ["fomaml/functional"],
            "grid": {"n_way": [5], "k_shot": [1], "devices": ["cpu"], "seeds": list(range(cells))},
            "training": {"meta_iterations": 30, "meta_batch_size": 4, "query": 5, "validate_every": 30,
                         "validation_episodes": 5},
            "evaluation": {"test_episodes": 50, "query": 5}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    raw = equal_cells(args.cells)
    suite, text = parse_suite(raw), yaml.safe_dump(raw)
    print(f"# {args.cells} equal CPU cells (fomaml/functional, glyphs 5-way 1-shot, 30 meta-iterations of 4 tasks, "
          f"50 test episodes); torch threads in process: {torch.get_num_threads()}; CPUs: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        run_suite(suite, text, f"sqlite:///{folder}/in-process.db", progress=False)
        in_process = time.perf_counter() - start
        print(f"in-process (sequential, {torch.get_num_threads()} threads a cell): {in_process:.1f} s")
        start = time.perf_counter()
        with RayExecutor(RayOptions(max_parallel=args.parallel, cpus_per_cell=1)) as executor:
            run_suite(suite, text, f"sqlite:///{folder}/ray.db", progress=False, executor=executor)
        on_ray = time.perf_counter() - start
        print(f"ray ({args.parallel} cells at once, 1 thread a cell, Ray started and stopped inside): {on_ray:.1f} s")
        print(f"in-process / ray: {in_process / on_ray:.2f}x")


if __name__ == "__main__":
    main()
