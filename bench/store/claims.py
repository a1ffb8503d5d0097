"""Which invocation runs a cell: decided by the store, never by client clocks.

Every attempt at a cell holds a numbered claim: a record named ``<suite>::claim::<config hash>::<generation>`` that
the store creates at most once (``tracking.reserve``), tagged with the attempt's run id. To run a cell, an invocation
creates its run, then reserves the generation after the latest one; of any number of claimants exactly one gets it,
however slow their writes, and the others delete their run and step back. A new generation is claimed only when the
latest claim's run ended without finishing or its owner is gone (then that run is closed as interrupted), and an
owner checks, before it logs a result, that its claim is still the latest: a cell is finished once.

The records are live experiments, hidden from the MLflow UI, since `mlflow gc` purges deleted ones: generations would
start again at 0 and a live cell be claimed twice. Older versions deleted each at once; ``keep`` makes those live. An
owner whose own record is gone, or names another run, stops: the store lost claims (``DamagedStore``), and no claim
in it can be trusted any more.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mlflow.exceptions import MlflowException

from bench.core import tags as t
from bench.store import ownership, tracking
from bench.store.tracking import FAILED, RUNNING


def _prefix(suite: str) -> str:
    return f"{suite}::claim::"


def _name(suite: str, config_hash: str, generation: int) -> str:
    return f"{_prefix(suite)}{config_hash}::{generation}"


class DamagedStore(RuntimeError):
    """A claim record this invocation made is gone or names another run: the store cannot say who runs a cell."""


def keep(client, suite: str) -> int:
    """Make the claim records of ``suite`` that an older version deleted live, before `mlflow gc` erases them."""
    return tracking.keep_deleted_records(client, _prefix(suite))


@dataclass(frozen=True)
class Latest:
    generation: int  # -1: never claimed
    run_id: str


def latest(client, suite: str, config_hash: str, start: int = 0) -> Latest:
    """The newest claim on a cell (generations are consecutive; ``start``: one known to exist, to skip ahead)."""
    found, generation = Latest(-1, ""), max(start, 0)
    while (record := tracking.reservation(client, _name(suite, config_hash, generation))) is not None:
        found, generation = Latest(generation, record[0].get(t.CLAIM_RUN_ID, "")), generation + 1
    return found


def claimed_at(client, suite: str, config_hash: str, generation: int) -> float:
    record = tracking.reservation(client, _name(suite, config_hash, generation))
    return record[1] / 1000 if record is not None else 0.0


def reserve(client, suite: str, config_hash: str, generation: int, run_id: str) -> bool:
    return tracking.reserve(client, _name(suite, config_hash, generation), {t.CLAIM_RUN_ID: run_id})


def still_holds(client, suite: str, config_hash: str, generation: int, run_id: str) -> bool:
    """Whether ``run_id``'s claim is still the latest and its run still RUNNING (not closed by an invocation that
    judged this one gone). A claim record is never removed or rewritten: where ours is, the store is damaged."""
    name = _name(suite, config_hash, generation)
    own = tracking.reservation(client, name)
    if own is None or own[0].get(t.CLAIM_RUN_ID) != run_id:
        found = "is gone" if own is None else f"names run {own[0].get(t.CLAIM_RUN_ID)!r}"
        raise DamagedStore(f"the claim record {name!r} of run {run_id} {found}: claim records were removed from the "
                           f"store (an experiment deleted by hand and purged, a restored backup?), so it cannot say "
                           f"who runs a cell any more; nothing more is claimed or logged. Check the store, then rerun")
    if latest(client, suite, config_hash, generation).run_id != run_id:
        return False
    run = _run(client, run_id)
    return run is not None and run.info.status == RUNNING


def _run(client, run_id: str):
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":  # deleted for good: the claim holds nothing
            return None
        raise  # any other store error must not read as "nobody holds the cell"
    return None if run.info.lifecycle_stage == "deleted" else run


@dataclass(frozen=True)
class Holder:
    """What the latest claim says about a cell: ``run`` is None where nobody holds it."""

    latest: Latest
    run: object | None
    alive: bool  # RUNNING under an owner that is not gone
    adopted: bool = False  # its owner was gone, its work goes on elsewhere (a Slurm job): ``adopt`` took it over


def holder(client, suite: str, config_hash: str, floor: int = -1,
           adopt: Callable[[object, int], bool] | None = None) -> Holder:
    """The run of the latest claim newer than generation ``floor`` (``--force``: claims from before the invocation
    do not count). A RUNNING holder whose owner is gone is closed as interrupted here, so nothing stays RUNNING,
    unless ``adopt(run, generation)`` takes it over (its cell still computing where the gone owner sent it)."""
    current = latest(client, suite, config_hash, max(floor, 0))
    if current.generation <= floor or not current.run_id:
        return Holder(current, None, False)
    run = _run(client, current.run_id)
    if run is None or run.info.status != RUNNING:
        return Holder(current, run, False)
    if tracking.owner_gone(client, run):
        if adopt is not None and adopt(run, current.generation):
            return Holder(current, run, False, adopted=True)
        tracking.end_run(client, current.run_id, t.OUTCOME_INTERRUPTED, FAILED,
                         {t.ERROR: f"owner gone ({ownership.describe(run.data.tags)}); the cell was claimed again"})
        return Holder(current, None, False)
    return Holder(current, run, True)
