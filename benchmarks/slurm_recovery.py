"""How long a cancelled Slurm cell takes to be finished by a rerun, on the real single-node Slurm of
tests/slurm/cluster.py: a `bench run --executor slurm` of one cell held mid-training (the gated sinusoid of
tests/slurm/gated.py), `scancel` of its job, then the same command again. Prints the seconds from `scancel` to the
first driver's exit (its run FAILED with Slurm's reason), from the rerun's start to its exit (the cell FINISHED), and
the rerun cell's own wall-clock, so what is Slurm's and the driver's and what is the cell's can be told apart.

    .venv/bin/python -m benchmarks.slurm_recovery [--meta-iterations 200]

Needs the Debian packages tests/slurm/cluster.py names (``.ci/run`` installs them) and root.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from tests.slurm.cluster import single_node_slurm, unavailable

ROOT = Path(__file__).resolve().parents[1]


def _suite(folder: Path, gate: Path, iterations: int) -> Path:
    raw = {"suite": "recovery", "dataset": {"name": "tests.slurm.gated:GATED", "options": {"gate": str(gate)}},
           "learners": ["maml"], "grid": {"n_way": [1], "k_shot": [10], "devices": ["cpu"], "seeds": [0]},
           "training": {"meta_iterations": iterations, "meta_batch_size": 25, "validate_every": iterations},
           "evaluation": {"test_episodes": 100}}
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _driver(path: Path, uri: str, partition: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "run", str(path), "--tracking-uri", uri, "--no-progress",
                             "--no-report", "--executor", "slurm", "--slurm-partition", partition],
                            cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meta-iterations", type=int, default=200)
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        sys.exit(f"no Slurm here: {reason}")
    with tempfile.TemporaryDirectory() as folder, single_node_slurm() as cluster:
        folder = Path(folder)
        os.environ.update(SLURM_CONF=str(cluster.conf), METABENCH_CHECKPOINTS=str(folder / "checkpoints"))
        gate = folder / "gate"
        gate.mkdir()
        path, uri = _suite(folder, gate, args.meta_iterations), f"sqlite:///{folder / 'mlflow.db'}"
        first = _driver(path, uri, cluster.partition)
        _wait(lambda: (gate / "reached").exists(), "cell held mid-training")
        (job,) = cluster.run("squeue", "-h", "-o", "%i").split()
        cancelled = time.monotonic()
        cluster.run("scancel", job)
        first.communicate(timeout=300)
        failed = time.monotonic() - cancelled
        (gate / "open").touch()
        started = time.monotonic()
        rerun = _driver(path, uri, cluster.partition)
        output, _ = rerun.communicate(timeout=900)
        ended = time.monotonic()
        if rerun.returncode != 0:
            sys.exit(output)
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("recovery").experiment_id])
        (done,) = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("role") == "cell"]
        cell_s = (done.info.end_time - done.info.start_time) / 1000
        print(f"cell: sinusoid MAML, {args.meta_iterations} meta-iterations (meta-batch 25), 100 test tasks; "
              f"cancelled at meta-iteration 2 (Slurm job {job})")
        print(f"scancel -> first driver exits (run FAILED): {failed:.1f} s")
        print(f"rerun start -> rerun exits (cell FINISHED): {ended - started:.1f} s")
        print(f"scancel -> cell FINISHED on the rerun (the rerun started at once): {failed + ended - started:.1f} s")
        print(f"the rerun cell's run, start to end: {cell_s:.1f} s; resumed from: "
              f"{done.data.tags.get('ran.resumed_from', 'none (iteration 0)')}")


if __name__ == "__main__":
    main()
