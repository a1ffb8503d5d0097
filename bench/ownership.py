"""Who owns a RUNNING run, and whether that owner is gone: two `bench run` on one store must leave each other's live
runs alone, and a run whose process died (Ctrl-C lost, kill -9, a lost machine) must not stay RUNNING forever.

A run is tagged with its owner's host, process id and process start time, and a heartbeat refreshed while it runs.
On the same host the owner is gone when no process with that id and start time exists; on another host, when the
heartbeat is older than ``STALE_AFTER_S``.
"""
from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path
from typing import Callable

HOST, PID, STARTED, HEARTBEAT = "owner.host", "owner.pid", "owner.started", "owner.heartbeat"
HEARTBEAT_EVERY_S = 30.0
STALE_AFTER_S = 600.0  # twenty missed heartbeats: the owner on another host is gone


def process_start(pid: int) -> str:
    """A token that tells this process apart from a later one reusing its id (Linux: start time in clock ticks)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {HOST: platform.node(), PID: str(pid), STARTED: process_start(pid), HEARTBEAT: f"{time.time():.0f}"}


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return not started or process_start(pid) in ("", started)


def owner_gone(tags: dict[str, str], now: float | None = None) -> bool:
    """Whether the process that owns a run with these tags has ended. Runs without owner tags (older versions of
    the harness) are taken as gone, as they always were."""
    if HOST not in tags or PID not in tags:
        return True
    if tags[HOST] == platform.node():
        return not _alive(int(tags[PID]), tags.get(STARTED, ""))
    beat = float(tags.get(HEARTBEAT, "0") or 0)
    return (now if now is not None else time.time()) - beat > STALE_AFTER_S


class Heartbeat:
    """Calls ``beat(now)`` every ``every`` seconds on a daemon thread until stopped (a context manager)."""

    def __init__(self, beat: Callable[[float], None], every: float = HEARTBEAT_EVERY_S):
        self._beat, self._every = beat, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._beat(time.time())

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
