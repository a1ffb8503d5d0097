"""The options of one `bench tune` invocation: where its studies live, their names and budget, how many workers."""
from __future__ import annotations

from dataclasses import dataclass

from bench.core.config import ConfigError
from bench.consumers.tune.storage import DEFAULT_HEARTBEAT, DEFAULT_STORAGE, JOURNAL


@dataclass(frozen=True)
class TuneOptions:
    storage: str = DEFAULT_STORAGE
    study: str = ""  # prefix of the study names; "" = the suite's name
    n_trials: int | None = None  # overrides search.n_trials: each study's total budget, not this invocation's
    timeout: float | None = None
    workers: int = 1
    executor: str = "in-process"  # what runs the workers (bench.run.executors); in process, one runs here
    # seconds; a killed worker's trial is failed (and retried) 2 heartbeats after its last. None: the default, or no
    # heartbeat at all on journal storage
    heartbeat: int | None = None

    def __post_init__(self) -> None:
        if self.heartbeat is not None and self.storage.startswith(JOURNAL):
            # Optuna's JournalStorage has no heartbeat (it is no BaseHeartbeat): accepting the flag would promise a
            # recovery that never happens
            raise ConfigError(f"--heartbeat {self.heartbeat}: journal storage ({self.storage}) has no heartbeat, so a "
                              f"killed worker's trial stays RUNNING and is never failed or retried there; leave out "
                              f"--heartbeat, or use an RDB storage (sqlite:///PATH, postgresql://...)")

    @property
    def heartbeat_interval(self) -> int | None:
        if self.storage.startswith(JOURNAL):
            return None
        return DEFAULT_HEARTBEAT if self.heartbeat is None else self.heartbeat
