"""Where `bench tune`'s studies live: an Optuna storage opened from its URL (SQLite, PostgreSQL or a journal file on a
shared filesystem), with the heartbeat that fails and retries a killed worker's trial."""
from __future__ import annotations

import warnings

import optuna
import sqlalchemy.exc

from bench.core.config import ConfigError
from bench.core.paths import OPTUNA_STORAGE

DEFAULT_STORAGE = OPTUNA_STORAGE
DEFAULT_HEARTBEAT = 10
JOURNAL = "journal:"  # a journal file on a shared filesystem


def storage_for(url: str, heartbeat: int | None) -> optuna.storages.BaseStorage:
    """An RDB storage runs with a heartbeat, so a killed worker's trial is failed and retried, never RUNNING forever;
    ``journal:PATH`` is a journal file for a shared filesystem (no heartbeat there). A storage that cannot be opened
    is bad input naming the URL."""
    try:
        with warnings.catch_warnings():  # the heartbeat's retry callback is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if url.startswith(JOURNAL):
                return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[len(JOURNAL):]))
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
    # a malformed URL or unknown dialect, a database that cannot be opened or reached, a missing driver, a journal
    # path that cannot be written
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.OperationalError, ImportError, OSError) as error:
        reason = str(error).splitlines()[0]
        raise ConfigError(f"--storage {url}: cannot open this Optuna storage ({reason}); give sqlite:///PATH, "
                          f"postgresql+psycopg://USER@HOST/DB or journal:PATH") from error
