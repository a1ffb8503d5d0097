"""Ctrl-C, handled in one place, in two ways:

- ``remembered()``, around a suite run: SIGINT raises KeyboardInterrupt at once and is remembered, and ``check()``
  raises it again. Python swallows a KeyboardInterrupt raised while a finaliser runs (the saved-tensor meter uses
  finalisers in warm-up iterations), so the training loop calls ``check()`` after every meta-iteration.
- ``held()``, around a store write: SIGINT is remembered and raised when the write is done. A KeyboardInterrupt
  inside MLflow's SQL session can be swallowed (the run goes on) or leave the store locked (the clean-up hangs);
  between writes it is safe.

Both act only in the main thread and never turn an ignored SIGINT back on (a job started in the background ignores
it); ``remembered()`` also leaves a handler someone else installed in place.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class _State:
    active = False  # inside remembered(): a suite run that Ctrl-C stops
    seen = False  # a SIGINT arrived since it began


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (and perhaps swallowed) since the suite run began; outside
    one (a cell run by a test, a tuning trial) there is nothing remembered to raise."""
    if _State.active and _State.seen:
        raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _remember_and_raise(signum, frame) -> None:
    _State.seen = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembered() -> Iterator[None]:
    if not _main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _State.active, _State.seen = True, False
    previous = signal.signal(signal.SIGINT, _remember_and_raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _State.active = False


@contextlib.contextmanager
def held() -> Iterator[None]:
    if not _main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    received = []

    def remember(signum, frame) -> None:
        received.append(signum)
        _State.seen = True

    previous = signal.signal(signal.SIGINT, remember)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def record() -> None:
    """Remember a Ctrl-C as the handler does, without raising here (another thread cannot raise in the main one)."""
    _State.seen = True


def reset() -> None:
    """Forget a remembered Ctrl-C (for a caller that handled it and goes on)."""
    _State.seen = False
