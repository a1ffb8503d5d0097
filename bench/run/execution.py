"""The one cell-execution loop: claim, reuse, wait, run (through an executor), record, retry. Every executor (in
process, Ray) goes through it; an executor only runs a cell that this loop has claimed and says how it ended.

The guarantees it keeps, whatever the executor:
- exactly once: a cell is claimed through the store (``bench.store.claims``); a finished run of the same code, cell
  configuration and execution environment is reused; a result is logged only while its claim is still the latest;
- liveness: one heartbeat refreshes the suite run and every run this invocation holds; a process that cannot beat
  stops its cells rather than run them unowned; a cell held by another live invocation is waited for, saying what
  it waits for, up to ``max_wait_s``, then left to a later run;
- every run ends with a status: an error while logging ends the cell FAILED with the reason, Ctrl-C ends the runs in
  flight KILLED, and nothing is logged under a code identity that no longer matches the source on disk.
"""
from __future__ import annotations

import csv
import math
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from tqdm import tqdm

from bench.core import interrupts
from bench.core import metrics as m
from bench.core import tags as t
from bench.run import test_time
from bench.run.training import CellResult, Trained
from bench.spec.suite import Cell
from bench.store import claims, ownership, tracking
from bench.store.provenance import LOADED_AT, check_unchanged, code_identity, evaluation_identity, files_of
from bench.store.tracking import FAILED, FINISHED, KILLED
from meta_bench.algorithms.base import LEARNERS, algorithm_of
from meta_bench.datasets import DATASETS, DataMissingError, load_dataset
from meta_bench.datasets.content import of_train_and_test

CLAIM_POLL_S = 1.0  # how often a cell held by another invocation is looked at again
DEFAULT_MAX_WAIT_S = 12 * 3600.0  # a cell held by a live invocation longer than this is left to a later run


@dataclass
class Outcome:
    cell: Cell
    outcome: str  # tags.OUTCOME_*: finished, reused, failed, skipped, held (another invocation still ran it)
    metrics: dict[str, float] = field(default_factory=dict)
    detail: str = ""
    run_id: str = ""


@dataclass
class SuiteRun:
    """One invocation's hold on a suite, as the loop sees it."""

    suite: str
    client: object
    experiment: str
    parent: str  # the suite run
    force: bool  # run every cell again
    reuse_other_code: bool  # reuse finished cells whatever code (and environment) made them
    progress: bool
    echo: Callable[[str], None]
    max_wait_s: float = DEFAULT_MAX_WAIT_S


@dataclass
class Attempt:
    """A claimed cell, as an executor receives it."""

    cell: Cell
    run_id: str
    number: int  # 0 for the first attempt, 1 after a lost worker, ...
    generation: int  # of its claim (bench.store.claims)
    trained: Trained | None = None  # only test these (a finished run's training; a test condition was added)


@dataclass
class Done:
    """How an attempt ended, as an executor reports it: a result, the cell's own error, or a lost worker."""

    attempt: Attempt
    result: CellResult | None = None
    curves: list[tuple[str, float, int]] = field(default_factory=list)  # points not yet logged
    error: str = ""
    trace: str = ""
    lost: str = ""  # the worker or its node died: the attempt may be retried
    code: str = ""  # code identity of the process that ran it
    environment: dict[str, str] = field(default_factory=dict)  # where it ran (tracking.environment_tags there)
    tags: dict[str, str] = field(default_factory=dict)  # the executor's own (executor.node, ...)


class Sink:
    """What an executor running a cell in this process reports to, while it runs: curves as they come, and the
    checks that stop a cell (Ctrl-C, lost ownership)."""

    def __init__(self, client, run_id: str, check: Callable[[], None]):
        self.client, self.run_id, self.check = client, run_id, check
        self.pending: list[tuple[str, float, int]] = []

    def on_train(self, iteration: int, values: dict[str, float]) -> None:
        self.pending.extend((name, value, iteration) for name, value in values.items() if math.isfinite(value))

    def on_validation(self, iteration: int, values: dict[str, float]) -> None:
        self.pending.extend((name, value, iteration) for name, value in values.items())
        tracking.log_metrics(self.client, self.run_id, self.pending)  # curves reach MLflow at every validation
        self.pending.clear()


class Executor(Protocol):
    """Runs claimed cells; decides nothing else. A context manager: it owns its lifecycle (Ray's start and stop)."""

    kind: str
    max_retries: int  # new attempts after a lost worker

    def __enter__(self) -> "Executor": ...
    def __exit__(self, *exc) -> None: ...
    def environment_key(self, cell: Cell) -> str: ...  # what timings depend on, known before running: resume key
    def unavailable(self, cell: Cell) -> str: ...  # why the cell cannot run here ("" where it can)
    def capacity(self) -> int: ...  # how many more claimed cells it takes now
    def submit(self, attempt: Attempt, sink: Sink) -> None: ...
    def collect(self, timeout: float) -> list[Done]: ...  # attempts that ended (may block up to ``timeout``)
    def cancel(self) -> None: ...  # stop everything in flight (Ctrl-C, lost ownership)
    def closing_tags(self) -> dict[str, dict[str, str]]: ...  # run id -> tags known only at the end
    def running_tags(self) -> dict[str, dict[str, str]]: ...  # run id -> tags known since the last call (job ids)
    def adoptable(self, run) -> bool: ...  # a gone owner's RUNNING run whose cell still computes where it was sent
    def adopt(self, attempt: Attempt, run) -> bool: ...  # take it over: its result comes back by ``collect``


def cell_code(cell: Cell) -> str:
    return code_identity(cell.learner, cell.dataset.name)


def data_identity(cell: Cell) -> str:
    """What the cell's episodes are made from (``meta_bench.datasets.content``) as this process reads the data;
    ``tags.DATA_UNKNOWN`` where it cannot (a cluster whose data lies on the workers alone: the worker records it)."""
    try:
        train = load_dataset(cell.dataset.name, cell.dataset_options).content_identity
        test = None if cell.evaluation.dataset is None else load_dataset(*cell.test_dataset).content_identity
    except DataMissingError:
        return t.DATA_UNKNOWN
    return of_train_and_test(train, test)


def evaluation_fingerprint(cell: Cell, data: str | None = None) -> str:
    """Equal for two runs exactly when their test episodes are identical: made from the same data by the same code,
    and scored by the same code (``data``: the data identity, where known other than from this process)."""
    return f"{cell.evaluation_fingerprint}-{evaluation_identity(cell.test_dataset[0])}-{data or data_identity(cell)}"


def cell_tags(cell: Cell, parent: str, environment: str) -> dict[str, str]:
    """The tags a cell's run is created with: what resuming and pairing match on. Where it ran is added when it ends
    (``Done.environment``), from the process that ran it."""
    return {t.ROLE: t.ROLE_CELL, t.CONFIG_HASH: cell.config_hash, t.TRAINING_HASH: cell.training_hash,
            t.CODE_IDENTITY: cell_code(cell), t.DATA_IDENTITY: data_identity(cell),
            t.EVAL_FINGERPRINT: evaluation_fingerprint(cell), t.ENVIRONMENT: environment, t.LEARNER: cell.learner,
            t.ALGORITHM: algorithm_of(cell.learner), t.ORIGIN: LEARNERS.origin(cell.learner), t.LABEL: cell.label,
            t.DATASET: cell.dataset.name, t.DATASET_ORIGIN: DATASETS.origin(cell.dataset.name),
            t.GIT_COMMIT: tracking.git_commit(), t.PARENT: parent,
            **{t.axis(name): value for name, value in cell.axes.items()}}


def training_provenance(donor) -> dict[str, str]:
    """Where a donor run's meta-training came from, as the tags of a run tested on it (``tags.TRAINED_BY``,
    ``tags.TRAINED_AS``): the donor's own code identity, commit and environment, or, where the donor was itself
    only tested on another's training, the provenance it carries."""
    tags = donor.data.tags
    if t.TRAINED_BY in tags:
        return {name: tags.get(name, "") for name in (t.TRAINED_BY, *t.TRAINED_AS)}
    return {t.TRAINED_BY: donor.info.run_id, **{name: tags.get(own, "") for name, own in t.TRAINED_AS.items()}}


def _write_scores(scores: list[float], score_name: str) -> Callable:
    def write(path):
        path.write_text("episode," + score_name + "\n" + "".join(f"{i},{s!r}\n" for i, s in enumerate(scores)))
    return write


def _write_rows(rows: list[tuple]) -> Callable:
    def write(path):
        with path.open("w", newline="") as out:  # csv writes floats as repr: they read back exactly
            csv.writer(out).writerows([test_time.COLUMNS, *rows])
    return write


def skip_run(client, run_id: str, cell: Cell, why: str) -> Outcome:
    tracking.end_run(client, run_id, t.OUTCOME_SKIPPED, KILLED, {t.SKIP_REASON: why})
    return Outcome(cell, t.OUTCOME_SKIPPED, detail=why, run_id=run_id)


def fail_run(client, run_id: str, cell: Cell, message: str, trace: str = "",
             environment: dict[str, str] | None = None) -> Outcome:
    tracking.end_run(client, run_id, t.OUTCOME_FAILED, FAILED, {t.ERROR: message, t.TRACEBACK: trace[-4000:],
                                                                **(environment or {})})
    return Outcome(cell, t.OUTCOME_FAILED, detail=message, run_id=run_id)


def finish_run(client, run_id: str, cell: Cell, result: CellResult, tags: dict[str, str]) -> Outcome:
    """Log a cell's results (metrics, per-episode test scores, meta-parameters) and end its run FINISHED; the data
    it was made from as the process that ran it read it: where the planning process could not read the data, the
    run's data identity and evaluation fingerprint are the worker's; where both read it and they differ, the data
    changed in between and the run fails."""
    ran_on = result.execution.get("data_identity", "")
    planned = data_identity(cell)
    if ran_on and planned != t.DATA_UNKNOWN and ran_on != planned:
        return fail_run(client, run_id, cell, f"the data changed between planning and running the cell (identity "
                                              f"{planned} when planned, {ran_on} when run): run the suite again")
    if ran_on and planned == t.DATA_UNKNOWN:
        tags = {**tags, t.DATA_IDENTITY: ran_on, t.EVAL_FINGERPRINT: evaluation_fingerprint(cell, ran_on)}
    stored = time.perf_counter()
    tracking.log_metrics(client, run_id, [(k, v, 0) for k, v in result.metrics.items() if math.isfinite(v)])
    tracking.log_file(client, run_id, _write_scores(result.test_scores, result.score_name), "test_episodes.csv")
    if result.condition_scores:  # every condition's per-episode scores and divergence flags, whole curves
        tracking.log_file(client, run_id, _write_rows(result.condition_scores), test_time.SCORES_FILE)
    tracking.log_file(client, run_id, lambda path: torch.save(result.state_dict, path), tracking.META_PARAMETERS)
    tracking.log_metrics(client, run_id, [(m.STORE_SECONDS, time.perf_counter() - stored, 0)])
    ran = {t.ran(k): v for k, v in result.execution.items()}
    tracking.end_run(client, run_id, t.OUTCOME_FINISHED, FINISHED, {t.SCORE: result.score_name, **ran, **tags})
    return Outcome(cell, t.OUTCOME_FINISHED, result.metrics, run_id=run_id)


@dataclass
class _Waiting:
    cell: Cell
    number: int
    since: float
    holder: str  # run id
    owner: str  # as a person reads it


class CellLoop:
    """Claims and records a suite's cells; ``executor`` runs them (see the module's docstring)."""

    last_ended = 0.0  # when this process's last suite run ended (--force: where the next one's work begins)

    def __init__(self, run: SuiteRun, executor: Executor):
        self.run, self.executor = run, executor
        self.outcomes: list[Outcome] = []
        self.in_flight: dict[str, Attempt] = {}  # run id -> attempt
        self.waiting: dict[str, _Waiting] = {}  # config hash -> cell held by another invocation
        self.floor: dict[str, int] = {}  # --force: the latest claim generation when this invocation started
        self.bar = tqdm(disable=True)
        self.heartbeat = ownership.Heartbeat(lambda run_id, now: tracking.heartbeat(run.client, run_id, now),
                                             lambda: [run.parent, *self.in_flight])

    def check(self) -> None:
        """Between steps and after every meta-iteration: Ctrl-C, and whether we still own what we hold."""
        interrupts.check()
        self.heartbeat.check()

    def through(self, cells: list[Cell]) -> list[Outcome]:
        run = self.run
        if run.force:  # what --force reruns: claims from before this invocation began, but a live one (a concurrent
            # --force). It began with this process (a `bench run` launched beside another may find the other's claims
            # made already), or, for a later suite run in the same process (tests, notebooks), when the last ended
            since = max(LOADED_AT, CellLoop.last_ended)
            self.floor = {c.config_hash: self._force_floor(c, since) for c in cells}
        self.bar = tqdm(total=len(cells), desc=f"{run.suite}: cells", unit="cell", disable=not run.progress)
        pending = deque((cell, 0) for cell in cells)
        try:
            with self.heartbeat:
                while pending or self.in_flight or self.waiting:
                    while pending and self.executor.capacity() > 0:
                        self._claim(*pending.popleft())
                    for done in self.executor.collect(CLAIM_POLL_S):
                        retry = self._record(done)
                        if retry is not None:
                            pending.append(retry)
                    for run_id, tags in self.executor.running_tags().items():
                        tracking.set_tags(run.client, run_id, tags)
                    self._look_at_waiting(idle=not pending and not self.in_flight)
                    self.check()
            for run_id, tags in self.executor.closing_tags().items():
                tracking.set_tags(run.client, run_id, tags)
        except BaseException as error:
            self._abandon(error)
            raise
        finally:
            self.bar.close()
            CellLoop.last_ended = time.time()
        return self.outcomes

    # -- claiming ----------------------------------------------------------------------------------------------

    def _force_floor(self, cell: Cell, since: float) -> int:
        """The newest claim generation --force does not stand on: claims made before ``since``, unless a live
        invocation runs one now (a concurrent --force: both want one fresh run, not two). Claim times are the
        store's clock, ``since`` is ours: across machines, skew shifts which claims count as fresh."""
        client, suite, key = self.run.client, self.run.suite, cell.config_hash
        holder = claims.holder(client, suite, key)
        floor = holder.latest.generation - (1 if holder.alive else 0)
        while floor >= 0 and claims.claimed_at(client, suite, key, floor) > since:
            floor -= 1
        return floor

    def _reusable(self, cell: Cell, environment: str, key: str = t.CONFIG_HASH):
        """The run that stands for the cell (``tracking.standing_run``), where this invocation may stand on it
        instead of running the cell: made by the same code in the same environment, or any under
        --reuse-other-code; None under --force. An older run that would match is never taken instead: the report
        shows the standing run, and a reuse must print the numbers it shows. With ``key`` ``t.TRAINING_HASH``, the
        standing run of the cell's training (it may differ from the cell in testing alone)."""
        run = self.run
        if run.force:
            return None
        value = cell.config_hash if key == t.CONFIG_HASH else cell.training_hash
        standing = tracking.standing_run(tracking.runs_of_cell(run.client, run.experiment, value, key))
        if standing is None:
            return None
        tags = standing.data.tags
        same = tags.get(t.CODE_IDENTITY) == cell_code(cell) and tags.get(t.ENVIRONMENT) == environment
        # never across data: not even --reuse-other-code stands on a run of other (or unknown) data
        data = data_identity(cell)
        if data == t.DATA_UNKNOWN or tags.get(t.DATA_IDENTITY) != data:
            return None
        return standing if same or run.reuse_other_code else None

    def _trained(self, cell: Cell, environment: str) -> Trained | None:
        """The meta-training of a finished run that differs from ``cell`` only in how it is tested, if any (never a
        run of the cell itself: that one is reused, not tested again)."""
        donor = self._reusable(cell, environment, t.TRAINING_HASH)
        if donor is None or donor.data.tags.get(t.CONFIG_HASH) == cell.config_hash:
            return None
        return Trained(training_provenance(donor), tracking.meta_parameters(self.run.client, donor.info.run_id),
                       dict(donor.data.metrics))

    def _claim(self, cell: Cell, number: int, waiting: _Waiting | None = None) -> None:
        """Reuse, wait for, or claim and submit ``cell`` (``waiting``: how long we have waited for it so far)."""
        run, client = self.run, self.run.client
        environment = self.executor.environment_key(cell)
        for _ in range(100):  # each pass settles the cell, or loses a reservation race to a newer claim and looks again
            finished = self._reusable(cell, environment)
            if finished is not None:
                self._reuse(cell, finished)
                return
            trained = self._trained(cell, environment)  # before the claim is read: the window to reserve stays short
            holder = claims.holder(client, run.suite, cell.config_hash, self.floor.get(cell.config_hash, -1),
                                   adopt=lambda held, generation: self._adopt(cell, number, held, generation))
            if holder.adopted:
                return
            if holder.alive:
                self._wait(cell, number, holder, waiting)
                return
            if holder.run is not None and tracking.is_finished(holder.run):
                # another invocation finished it since we looked (under --force: a concurrent --force, after this
                # invocation started): reuse it here, or, where the run standing now is not ours to reuse (other
                # code or environment), claim the cell below; no pass is spent looking again
                finished = holder.run if run.force else self._reusable(cell, environment)
                if finished is not None:
                    self._reuse(cell, finished)
                    return
            generation = max(holder.latest.generation, self.floor.get(cell.config_hash, -1)) + 1
            # never start a run under an identity the disk no longer has
            check_unchanged(files_of(cell.learner, cell.dataset.name))
            tags = cell_tags(cell, run.parent, environment)
            if trained is not None:
                tags.update(trained.provenance)
            run_id = tracking.start_run(client, run.experiment, cell.title, tags)
            if claims.reserve(client, run.suite, cell.config_hash, generation, run_id):
                self._start(Attempt(cell, run_id, number, generation, trained))
                return
            tracking.delete_run(client, run_id)  # another claimant reserved this generation first: step back
        raise RuntimeError(f"{cell.title}: lost 100 claim races in a row; is another invocation looping?")

    def _adopt(self, cell: Cell, number: int, held, generation: int) -> bool:
        """Take over ``held``, a RUNNING run of ``cell`` whose owner is gone but whose work the executor says goes
        on (a Slurm job still queued or running, or done with its result waiting): this invocation becomes its
        owner and records its result as if it had sent it."""
        if not self.executor.adoptable(held):
            return False
        attempt = Attempt(cell, held.info.run_id, number, generation)
        if not self.executor.adopt(attempt, held):
            return False
        tracking.set_tags(self.run.client, attempt.run_id, ownership.owner_tags())  # ours now: beaten, recorded
        self.in_flight[attempt.run_id] = attempt
        self.bar.write(f"adopted  {cell.title}: run {attempt.run_id}, left running by a gone invocation "
                       f"({ownership.describe(held.data.tags)})")
        self._show()
        return True

    def _reuse(self, cell: Cell, finished) -> None:
        self._done(Outcome(cell, t.OUTCOME_REUSED, dict(finished.data.metrics), run_id=finished.info.run_id))

    def _start(self, attempt: Attempt) -> None:
        client, cell = self.run.client, attempt.cell
        self.in_flight[attempt.run_id] = attempt
        try:
            tracking.log_params(client, attempt.run_id, cell.resolved())
            why = self.executor.unavailable(cell)
        except Exception as error:  # noqa: BLE001  (a store error: the run ends FAILED with it, the suite goes on)
            self.refuse(attempt, f"could not start: {type(error).__name__}: {error}", traceback.format_exc())
            return
        if why:
            self.in_flight.pop(attempt.run_id)
            self._done(skip_run(client, attempt.run_id, cell, why))
            return
        self.executor.submit(attempt, Sink(client, attempt.run_id, self.check))
        self._show()

    def _wait(self, cell: Cell, number: int, holder: claims.Holder, waiting: _Waiting | None) -> None:
        now = time.time()
        if waiting is None or waiting.holder != holder.run.info.run_id:
            waiting = _Waiting(cell, number, now, holder.run.info.run_id, ownership.describe(holder.run.data.tags))
            self.bar.write(f"waiting  {cell.title}: run {waiting.holder} of another invocation ({waiting.owner}) "
                           f"runs it, since {time.strftime('%H:%M:%S', time.localtime(now))}")
        if now - waiting.since > self.run.max_wait_s:
            self._done(Outcome(cell, t.OUTCOME_HELD, detail=f"still run by {waiting.holder} ({waiting.owner}) after "
                                                   f"{now - waiting.since:.0f} s; left to a later run"))
            return
        self.waiting[cell.config_hash] = waiting

    def _look_at_waiting(self, idle: bool) -> None:
        """Cells another invocation runs: take them over if it ended without finishing them."""
        if not self.waiting:
            return
        if idle:
            time.sleep(CLAIM_POLL_S)
        for key in list(self.waiting):
            if self.executor.capacity() <= 0:
                return
            waiting = self.waiting.pop(key)
            self._claim(waiting.cell, waiting.number, waiting)

    # -- recording ---------------------------------------------------------------------------------------------

    def _record(self, done: Done) -> tuple[Cell, int] | None:
        """Log how an attempt ended; a lost worker's cell comes back for another attempt (returned)."""
        attempt = done.attempt
        self.in_flight.pop(attempt.run_id, None)
        try:
            if done.lost:
                return self._lost(done)
            self._done(self._outcome(done))
        except claims.DamagedStore as error:  # no claim in the store can be trusted: this run ends FAILED, all stop
            self.refuse(attempt, str(error), traceback.format_exc(), done.environment)
            raise
        except Exception as error:  # noqa: BLE001  (logging failed, e.g. ENOSPC: the cell ends FAILED with the reason)
            self.refuse(attempt, f"could not record the result: {type(error).__name__}: {error}",
                       traceback.format_exc(), done.environment)
        return None

    def _outcome(self, done: Done) -> Outcome:
        attempt, client = done.attempt, self.run.client
        cell, run_id = attempt.cell, attempt.run_id
        expected = cell_code(cell)
        # no code where no process could report it (a Slurm job cancelled): its error says what happened
        if done.code != expected and (done.code or done.result is not None):
            return fail_run(client, run_id, cell, f"the worker on {done.tags.get(t.EXECUTOR_NODE, '?')} runs other "
                                                  f"code ({done.code}, this driver {expected}): deploy one commit")
        if done.result is None:
            return fail_run(client, run_id, cell, done.error, done.trace, done.environment)
        check_unchanged(files_of(cell.learner, cell.dataset.name))
        if not claims.still_holds(client, self.run.suite, cell.config_hash, attempt.generation, run_id):
            return Outcome(cell, t.OUTCOME_FAILED, run_id=run_id,
                           detail="another invocation took this cell over (this one was judged gone): its result is "
                                  "not logged")
        tracking.log_metrics(client, run_id, done.curves)
        return finish_run(client, run_id, cell, done.result,
                          {**done.environment, **done.tags, t.EXECUTOR: self.executor.kind})

    def _lost(self, done: Done) -> tuple[Cell, int] | None:
        attempt, client = done.attempt, self.run.client
        if attempt.number >= self.executor.max_retries:
            self._done(fail_run(client, attempt.run_id, attempt.cell,
                                f"the worker died in each of {attempt.number + 1} attempt(s); last: {done.lost}"))
            return None
        tracking.end_run(client, attempt.run_id, t.OUTCOME_INTERRUPTED, FAILED,
                         {t.ERROR: f"attempt {attempt.number + 1}: the worker died ({done.lost}); retried"})
        self.run.echo(f"{attempt.cell.title}: worker lost ({done.lost}); attempt {attempt.number + 2} of "
                      f"{self.executor.max_retries + 1}")
        return attempt.cell, attempt.number + 1

    def refuse(self, attempt: Attempt, message: str, trace: str, environment: dict[str, str] | None = None) -> None:
        """End an attempt FAILED with ``message``; where even that write fails, say so (the run is then closed as
        interrupted by the next invocation, once this one's heartbeat has stopped)."""
        self.in_flight.pop(attempt.run_id, None)
        try:
            outcome = fail_run(self.run.client, attempt.run_id, attempt.cell, message, trace, environment)
        except Exception as error:  # noqa: BLE001  (the store itself is failing: report both, go on)
            outcome = Outcome(attempt.cell, t.OUTCOME_FAILED, run_id=attempt.run_id,
                              detail=f"{message}; marking the run FAILED failed too: {type(error).__name__}: {error}")
        self._done(outcome)

    def _abandon(self, error: BaseException) -> None:
        """Ctrl-C, lost ownership or a store error: stop what runs, end every run this invocation holds."""
        self.executor.cancel()
        status, outcome = ((KILLED, t.OUTCOME_INTERRUPTED) if isinstance(error, KeyboardInterrupt)
                           else (FAILED, t.OUTCOME_FAILED))
        for attempt in list(self.in_flight.values()):
            try:
                tracking.end_run(self.run.client, attempt.run_id, outcome, status,
                                 {t.ERROR: f"{type(error).__name__}: {error}"[:2000]})
            except Exception as failure:  # noqa: BLE001  (the store may be what failed: say so, the next invocation closes it)
                self.run.echo(f"could not end run {attempt.run_id} ({attempt.cell.title}): "
                              f"{type(failure).__name__}: {failure}; the next invocation closes it as interrupted")
        self.in_flight.clear()

    def _done(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.bar.update(1)
        if self.run.progress or outcome.outcome != t.OUTCOME_REUSED:
            detail = f" ({outcome.detail})" if outcome.detail else ""
            self.bar.write(f"{outcome.outcome:8s} {outcome.cell.title}{detail}")
        self._show()

    def _show(self) -> None:
        failed = sum(o.outcome == t.OUTCOME_FAILED for o in self.outcomes)
        self.bar.set_postfix(running=len(self.in_flight), waiting=len(self.waiting), failed=failed, refresh=False)
