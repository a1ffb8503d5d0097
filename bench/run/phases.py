"""Where a cell's wall-clock goes: one clock that gives every interval of the cell to exactly one phase, so the
phases add up to the cell's time and nothing is counted twice. A phase entered inside another pauses the outer one
(validation inside the training loop counts as validation, not as the loop's work between iterations).

The clock reads the host's time: on a GPU, work the host queued is counted where the host waits for it (the timed
meta-iterations synchronise; the phases around them then hold only what the host itself spends).
"""
from __future__ import annotations

import time

from bench.core import metrics as m


class PhaseClock:
    """Seconds by phase (``metrics.TIME_PHASES``) from its creation; outside any ``phase`` the time is ``OTHER``."""

    OTHER = "other"

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(m.TIME_PHASES, 0.0)
        self._stack = [self.OTHER]
        self._since = time.perf_counter()

    def _switch(self) -> None:
        now = time.perf_counter()
        self.seconds[self._stack[-1]] += now - self._since
        self._since = now

    def phase(self, name: str) -> "_Phase":
        """A context in which the time is ``name``'s (a class, not a generator: it runs a few times per
        meta-iteration)."""
        if name not in self.seconds:
            raise KeyError(f"unknown phase {name!r}; phases: {', '.join(self.seconds)}")
        return _Phase(self, name)

    def metrics(self) -> dict[str, float]:
        """Every phase's seconds so far, as the cell's metrics."""
        self._switch()
        return {m.time_in(name): seconds for name, seconds in self.seconds.items()}


class _Phase:
    __slots__ = ("clock", "name")

    def __init__(self, clock: PhaseClock, name: str):
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.clock._switch()  # noqa: SLF001  (the clock's own context)
        self.clock._stack.append(self.name)  # noqa: SLF001

    def __exit__(self, *exc) -> None:
        self.clock._switch()  # noqa: SLF001
        self.clock._stack.pop()  # noqa: SLF001
