"""Worker processes: each a `bench tune` of its share of the trials on the same storage, run to their end by an
executor's launcher (processes here, or a Slurm job array); the failures of those that did not exit 0."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from bench.core.paths import WORK_ROOT
from bench.run.executors import WorkerCommand
from bench.spec.suite import Suite, suite_file
from bench.consumers.tune.options import TuneOptions


def _worker_command(suite_path: str, options: TuneOptions, uri: str, shares: dict[str, int]) -> list[str]:
    command = [sys.executable, "-m", "bench", "tune", str(suite_file(suite_path).resolve()), "--worker-shares",
               json.dumps(shares), "--storage", options.storage, "--tracking-uri", uri]
    command += ["--n-trials", str(options.n_trials)] if options.n_trials else []
    command += ["--heartbeat", str(options.heartbeat)] if options.heartbeat is not None else []
    command += ["--study", options.study] if options.study else []
    command += ["--timeout", str(options.timeout)] if options.timeout else []
    return command


def start_workers(suite_path: str, suite: Suite, options: TuneOptions, uri: str, left: dict[str, int],
                  launch: Callable[..., list[str]]) -> list[str]:
    """``workers`` processes on one storage (processes, not threads: CUDA and threads do not mix), the trials left
    split between them exactly, run by ``launch``; the failures of those that did not exit 0."""
    count = options.workers
    shares = [{label: n // count + (i < n % count) for label, n in left.items()} for i in range(count)]
    # the caller's directory and work root: its import-path plugins import, and an installed copy's workers write
    # where it does (never into site-packages)
    workers = [WorkerCommand(f"worker {i}", f"{options.study or suite.suite}.tuning",
                             _worker_command(suite_path, options, uri, share), {"METABENCH_HOME": str(WORK_ROOT)},
                             str(Path.cwd()))
               for i, share in enumerate(s for s in shares if any(s.values()))]
    return launch(workers)
