"""Worker processes: each a `bench tune` of its share of the trials on the same storage, started together and
waited for; how those that did not exit 0 failed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from bench.core.paths import WORK_ROOT
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


def _exit_failure(index: int, process: subprocess.Popen) -> str | None:
    """How a worker failed, or None: a signal death is a negative return code."""
    code = process.returncode
    if code == 0:
        return None
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    return f"worker {index} (pid {process.pid}) {how}"


def start_workers(suite_path: str, suite: Suite, options: TuneOptions, uri: str, left: dict[str, int]) -> list[str]:
    """``workers`` processes on one storage (processes, not threads: CUDA and threads do not mix), the trials left
    split between them exactly; the failures of those that did not exit 0."""
    count = options.workers
    shares = [{label: n // count + (i < n % count) for label, n in left.items()} for i in range(count)]
    processes = []
    for i, share in enumerate(s for s in shares if any(s.values())):
        # the caller's directory and work root: its import-path plugins import, and an installed copy's workers
        # write where it does (never into site-packages)
        env = {**os.environ, "METABENCH_HOME": str(WORK_ROOT)}
        if suite.grid.devices[0].startswith("cuda") and "CUDA_VISIBLE_DEVICES" not in env:
            env["CUDA_VISIBLE_DEVICES"] = str(i)  # one GPU per worker
        processes.append(subprocess.Popen(_worker_command(suite_path, options, uri, share), cwd=Path.cwd(),
                                          env=env))
    for process in processes:
        process.wait()
    return [failure for i, p in enumerate(processes) if (failure := _exit_failure(i, p)) is not None]
