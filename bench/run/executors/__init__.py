"""Executors: what runs claimed cells. One module each, registered here by name with an options dataclass from which
`bench run`'s flags and their help are generated; every one runs a cell through ``attempt.run_attempt``. The cell
loop (``bench.run.execution``) claims, reuses, waits, retries and records the same way whichever runs the cells.

An executor's module imports its own library (Ray, submitit) only when it is started, so listing the flags or running
in process never imports them. Adding an executor is one module and one line in ``MODULES``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import typing
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any, Callable

from bench.core.config import ConfigError

# every executor's module, in the order `--executor` lists them: each calls ``register`` when imported
MODULES = ("bench.run.executors.in_process", "bench.run.executors.ray_tasks", "bench.run.executors.slurm_jobs")
DEFAULT = "in-process"


def flag(name: str, help: str, **argparse_options: Any) -> dict[str, Any]:  # noqa: A002  (argparse's word)
    """A field's ``metadata``: the command-line flag that sets it and what it means."""
    return {"flag": name, "help": help, "argparse": argparse_options}


@dataclass(frozen=True)
class ExecutorEntry:
    name: str
    summary: str  # one line for `--executor`'s help
    options: type  # a frozen dataclass; each field's metadata is a ``flag(...)``
    build: Callable[..., Any]  # (options, suites, progress) -> an executor, not yet started; ValueError: refused
    extra: str = ""  # the optional dependency it needs, for the message where it is missing
    # (options, cuda) -> a launcher, ``launch(workers, echo)`` -> the failures of the workers that did not exit 0,
    # which runs `bench tune`'s worker commands to their end; ValueError: refused (None: it runs no tune workers)
    workers: Callable[..., Callable[..., list[str]]] | None = None


@dataclass(frozen=True)
class WorkerCommand:
    """One worker process to run to its end: a command line, what it adds to the environment it starts in (the
    launcher's, or a job's own on a cluster), its directory."""

    name: str  # "worker 0"
    group: str  # what the workers serve, for job names and log folders: "<study>.tuning"
    command: list[str]
    env: dict[str, str]
    cwd: str


EXECUTORS: dict[str, ExecutorEntry] = {}


class DiesWithItsOwner:
    """What an executor whose cells end with the invocation that sent them says to the loop: no tags before a cell
    ends, nothing a later invocation could adopt."""

    def running_tags(self) -> dict[str, dict[str, str]]:
        return {}

    def adoptable(self, run) -> bool:
        return False

    def adopt(self, attempt, run) -> bool:
        return False

    def closing_tags(self) -> dict[str, dict[str, str]]:
        return {}


def register(entry: ExecutorEntry) -> None:
    if entry.name in EXECUTORS:
        raise ValueError(f"executor {entry.name!r} is already registered")
    EXECUTORS[entry.name] = entry


def _load() -> dict[str, ExecutorEntry]:
    for module in MODULES:
        importlib.import_module(module)
    return EXECUTORS


def _argparse_type(annotation: Any) -> Any:
    """The type argparse converts a flag's value to: the field's own, ``X | None`` read as ``X``."""
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    return arguments[0] if arguments else annotation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor`` and every executor's flags, generated from the options dataclasses (their defaults in the
    help); a flag left out keeps the option's default."""
    entries = _load()
    parser.add_argument("--executor", choices=list(entries), default=DEFAULT,
                        help="; ".join(f"{e.name}: {e.summary}" for e in entries.values()))
    for entry in entries.values():
        hints = typing.get_type_hints(entry.options)
        for field in dataclasses.fields(entry.options):
            meta = field.metadata
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            shown = "none" if default in (None, ()) else default
            parser.add_argument(meta["flag"], dest=_dest(entry, field), default=None, metavar=field.name.upper(),
                                type=_argparse_type(hints[field.name]),
                                help=f"with --executor {entry.name}: {meta['help']} (default {shown})",
                                **meta["argparse"])


def _dest(entry: ExecutorEntry, field: dataclasses.Field) -> str:
    return f"executor_{entry.name.replace('-', '_')}_{field.name}"


def _chosen(args: argparse.Namespace) -> tuple[ExecutorEntry, Any]:
    """The executor ``args`` name and the options its flags set; a flag of another executor or an option out of
    range is refused with ConfigError."""
    entries = _load()
    chosen = entries[args.executor]
    for entry in entries.values():
        for field in dataclasses.fields(entry.options):
            if entry is not chosen and getattr(args, _dest(entry, field)) is not None:
                raise ConfigError(f"{field.metadata['flag']} is for --executor {entry.name}")
    given = {field.name: value for field in dataclasses.fields(chosen.options)
             if (value := getattr(args, _dest(chosen, field))) is not None}
    try:
        return chosen, chosen.options(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    except ValueError as error:
        raise ConfigError(str(error)) from None


@contextlib.contextmanager
def _refusals(entry: ExecutorEntry) -> Iterator[None]:
    """A missing library or a refusal of the executor's (ValueError) as ConfigError, naming what to install."""
    try:
        yield
    except ImportError as error:
        raise ConfigError(f"--executor {entry.name} needs {entry.extra or error.name}: pip install -e "
                          f"'.[distributed]' ({error})") from None
    except ValueError as error:
        raise ConfigError(str(error)) from None


def from_arguments(args: argparse.Namespace, suites: list, progress: bool):
    """The executor ``args`` name, with the options its flags set, not yet started (the caller enters it). A flag
    of another executor, an option out of range or a cell it cannot run is refused with ConfigError, before anything
    is written."""
    entry, options = _chosen(args)
    with _refusals(entry):
        return entry.build(options, suites, progress)


def launcher_from_arguments(args: argparse.Namespace, cuda: bool) -> Callable[..., list[str]]:
    """What runs `bench tune`'s worker commands (on CUDA devices where ``cuda``) on the executor ``args`` name:
    ``launch(workers, echo)`` -> the failures. An executor that runs no workers, a flag of another one, an option it
    refuses or a missing library is refused with ConfigError, before anything is written."""
    entry, options = _chosen(args)
    if entry.workers is None:
        able = ", ".join(sorted(e.name for e in _load().values() if e.workers is not None))
        raise ConfigError(f"--executor {entry.name} does not run bench tune's workers; the executors that do: {able}")
    with _refusals(entry):
        return entry.workers(options, cuda)
