"""Who owns a RUNNING run, and whether that owner is gone: two `bench run` on one store must leave each other's live
runs alone, and a run whose process died (Ctrl-C lost, kill -9, a lost machine) must not stay RUNNING forever.

A run is tagged with its owner's host name (for people), machine identity (boot id and pid namespace: equal host
names in containers or cloned VMs are told apart), process id and start time, the heartbeat the owner refreshes and
the staleness limit it promises to keep. The owner is gone when its heartbeat is older than that limit (a stopped or
hung process included), or, on the same machine, when no process with that id and start time runs (a zombie is
gone). The heartbeat is the owner's clock: its age is read from our clock only where both are one (one kernel).
Another machine's clock may be hours off ours, so there a reader dates the heartbeat by watching it: gone once it
has stayed unchanged for the limit by the reader's monotonic clock, from when a reader on its machine first saw it
(kept on the run: ``judge`` says what to write). An owner that cannot beat for most of its limit stops its own cells
(``Heartbeat.check``) rather than run on unowned while another invocation takes them over.

``METABENCH_HEARTBEAT_S`` and ``METABENCH_STALE_AFTER_S`` scale both times (tests, or stores slower than usual).
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from bench.core import tags as t

# the owner tags (bench.core.tags), by the short names this module and its readers use
HOST, MACHINE, PID, STARTED = t.OWNER_HOST, t.OWNER_MACHINE, t.OWNER_PID, t.OWNER_STARTED
HEARTBEAT, STALE_AFTER = t.OWNER_HEARTBEAT, t.OWNER_STALE_AFTER
HEARTBEAT_EVERY_S = float(os.environ.get("METABENCH_HEARTBEAT_S", 30.0))
STALE_AFTER_S = float(os.environ.get("METABENCH_STALE_AFTER_S", 600.0))  # twenty missed heartbeats
GIVE_UP_FRACTION = 0.8  # an owner that could not beat for this part of its limit stops before others take over


class OwnershipLost(RuntimeError):
    """This process could not refresh its heartbeat for most of its staleness limit: others may take its runs."""


def _stat_field(pid: int, index: int) -> str:
    """Field ``index`` (after the command name) of /proc/PID/stat; "" where there is no such process (or no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[index]
    except (OSError, IndexError):
        return ""


def process_start(pid: int) -> str:
    """A token that tells this process apart from a later one reusing its id (Linux: start time in clock ticks)."""
    return _stat_field(pid, 19)


def _process_state(pid: int) -> str:
    return _stat_field(pid, 0)  # R, S, D, T (stopped), Z (zombie), ...


def machine_identity() -> str:
    """What makes process ids comparable: one kernel boot and one pid namespace. Host names are not enough
    (containers with host networking, cloned VMs share them)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: the host name is all there is
        return platform.node()
    return f"{boot}/{namespace}"


def owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {HOST: platform.node(), MACHINE: machine_identity(), PID: str(pid), STARTED: process_start(pid),
            HEARTBEAT: f"{time.time():.3f}", STALE_AFTER: f"{STALE_AFTER_S:g}"}


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    if _process_state(pid) == "Z":  # exited, not yet reaped: it will never beat again
        return False
    return not started or process_start(pid) in ("", started)


def _same_machine(tags: dict[str, str]) -> bool:
    if MACHINE in tags:
        return tags[MACHINE] == machine_identity()
    return tags[HOST] == platform.node()  # runs of older versions carry the host name alone


def _same_clock(tags: dict[str, str]) -> bool:
    """Whether the owner's wall clock is ours: one boot of one kernel, whatever the pid namespace."""
    if MACHINE in tags:
        return tags[MACHINE].split("/")[0] == machine_identity().split("/")[0]
    return tags[HOST] == platform.node()


# when this reader sees a heartbeat: monotonic (never stepped), one clock for every process of a boot (a later
# invocation continues what an earlier one saw; the tag is per machine identity, so a reboot starts afresh)
watch_clock = time.monotonic
SEEN = t.OWNER_SEEN_PREFIX + hashlib.sha256(machine_identity().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Verdict:
    gone: bool
    seen: dict[str, str]  # tags to add to the run: where this reader first saw its heartbeat (never with gone)


def _watched_for(tags: dict[str, str]) -> float | None:
    """How long this machine has seen the run's current heartbeat unchanged; None where it has not seen it."""
    (value, _, at), now = tags.get(SEEN, "").partition(" "), watch_clock()
    if not at or value != tags.get(HEARTBEAT, "") or now < float(at):  # a new beat, or another boot (not Linux)
        return None
    return now - float(at)


def judge(tags: dict[str, str]) -> Verdict:
    """Whether the process that owns a run with these tags has ended or stopped beating. Runs without owner tags
    (older versions of the harness) are taken as gone, as they always were."""
    if HOST not in tags or PID not in tags:
        return Verdict(True, {})
    limit = float(tags.get(STALE_AFTER) or STALE_AFTER_S)
    if not _same_clock(tags):
        watched = _watched_for(tags)
        if watched is None:
            return Verdict(False, {SEEN: f"{tags.get(HEARTBEAT, '')} {watch_clock():.3f}"})
        return Verdict(watched > limit, {})
    if time.time() - float(tags.get(HEARTBEAT) or 0) > limit:
        return Verdict(True, {})
    return Verdict(_same_machine(tags) and not _alive(int(tags[PID]), tags.get(STARTED, "")), {})


def describe(tags: dict[str, str]) -> str:
    """An owner as a person reads it: host, pid and the age of its heartbeat, as far as this machine can tell."""
    who = f"pid {tags.get(PID, '?')} on {tags.get(HOST, '?')}"
    if HOST in tags and _same_clock(tags):
        return f"{who}, heartbeat {time.time() - float(tags.get(HEARTBEAT) or 0):.0f} s ago"
    watched = _watched_for(tags)
    if watched is None:
        return f"{who}, another machine: its heartbeat is dated by watching it, from now"
    return f"{who}, another machine: heartbeat unchanged for {watched:.0f} s as seen from here"


class Heartbeat:
    """Calls ``beat(run_id, now)`` for every run ``runs()`` names, every ``every`` seconds on a daemon thread, until
    stopped (a context manager). A failed write is retried with backoff, never ends the thread; when no beat has
    succeeded for ``GIVE_UP_FRACTION`` of the staleness limit, ``check()`` raises ``OwnershipLost`` in the
    working thread, which stops the cells instead of running them unowned."""

    def __init__(self, beat: Callable[[str, float], None], runs: Callable[[], Iterable[str]],
                 every: float | None = None, stale_after: float | None = None,
                 warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)):
        self._beat, self._runs, self._warn = beat, runs, warn
        self._every = HEARTBEAT_EVERY_S if every is None else every
        self._stale_after = STALE_AFTER_S if stale_after is None else stale_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-heartbeat", daemon=True)
        self.last_success = time.time()
        self.last_error = ""

    def beat_once(self) -> bool:
        now = time.time()
        try:
            for run_id in list(self._runs()):
                self._beat(run_id, now)
        except Exception as error:  # noqa: BLE001  (any store error: said, retried; check() stops a long run of them)
            if not self.last_error:  # the first of a run of failures is said; check() names the last
                self._warn(f"heartbeat: could not write ({type(error).__name__}: {error}); retrying")
            self.last_error = f"{type(error).__name__}: {error}"[:500]
            return False
        if self.last_error:
            self._warn(f"heartbeat: writing again after {now - self.last_success:.0f} s of errors")
        self.last_success, self.last_error = now, ""
        return True

    def _run(self) -> None:
        backoff = min(1.0, self._every)
        wait = self._every
        while not self._stop.wait(wait):
            if self.beat_once():
                wait, backoff = self._every, min(1.0, self._every)
            else:  # retry sooner, then back off towards the normal period
                wait, backoff = backoff, min(backoff * 2, self._every)

    def check(self) -> None:
        silent = time.time() - self.last_success
        if silent > GIVE_UP_FRACTION * self._stale_after:
            raise OwnershipLost(f"no heartbeat reached the store for {silent:.0f} s (limit {self._stale_after:g} s; "
                                f"last error: {self.last_error or 'none'}): stopped rather than run unowned")

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
