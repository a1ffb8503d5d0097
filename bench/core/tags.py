"""The one tag schema: every MLflow tag the harness writes or reads, by name, and the values it gives them.

Runs are found, resumed, claimed, paired and reported by their tags, so each is spelled here once and everywhere else
by its constant. The strings are what stored runs carry: a changed string makes the runs of older stores unreadable.
Grouped by what writes them.
"""
from __future__ import annotations

from typing import Mapping

# -- what a run is: every run the harness creates (bench.run.runner, bench.run.execution, bench.consumers.tune) ----
ROLE = "role"
ROLE_SUITE, ROLE_CELL = "suite", "cell"  # a suite invocation (the parent) and one cell under it
ROLE_STUDY, ROLE_TRIAL = "study", "trial"  # `bench tune`: a study (the parent) and one trial under it
PARENT = "mlflow.parentRunId"  # MLflow's own: the suite run of a cell, the study run of a trial

# -- a cell's run as it is created (bench.run.execution.cell_tags): what resuming and pairing match on ------------
CONFIG_HASH = "config_hash"  # the cell's resolved configuration
CODE_IDENTITY = "code_identity"  # the source the cell's results depend on (bench.store.provenance)
DATA_IDENTITY = "data_identity"  # what the episodes are made from: files' content, or generation parameters
DATA_UNKNOWN = "unknown"  # the planning process could not read the data: the worker's is recorded when it ends
EVAL_FINGERPRINT = "eval_fingerprint"  # equal exactly when two runs were scored on the same test episodes
ENVIRONMENT = "environment"  # the executor's environment key: what timings depend on, known before running
LEARNER = "learner"  # the registered name (``fomaml/functional``)
ALGORITHM = "algorithm"  # the algorithm the registry records for that name (``fomaml``)
ORIGIN = "learner_origin"  # where the learner comes from: "built in", or a plugin's entry point or import path
LABEL = "label"  # how reports name the learner (also a trial's)
DATASET = "dataset"
DATASET_ORIGIN = "dataset_origin"  # where the dataset comes from: "built in", or a plugin's entry point or import path
TRAINING_HASH = "training_hash"  # the configuration less what only testing reads: runs that train the same model
AXIS_PREFIX = "axis."  # one tag per axis of the grid: ``axis.n_way``, ``axis.seed``, ``axis.inner_lr``, ...


def axis(name: str) -> str:
    return AXIS_PREFIX + name


# -- how a run ended (bench.store.tracking.end_run, for every role) ------------------------------------------------
OUTCOME = "outcome"
OUTCOME_FINISHED, OUTCOME_FAILED, OUTCOME_SKIPPED = "finished", "failed", "skipped"
OUTCOME_INTERRUPTED = "interrupted"  # Ctrl-C, or its owner gone (closed by another invocation)
OUTCOME_PRUNED = "pruned"  # a trial the pruner stopped
# what an invocation did with a cell without ending a run of its own (bench.run.execution.Outcome, never a tag)
OUTCOME_REUSED = "reused"  # a finished run stood for it
OUTCOME_HELD = "held"  # another invocation still ran it when this one gave up waiting
ERROR, TRACEBACK = "error", "traceback"  # a failed or interrupted run: why
SKIP_REASON = "skip_reason"  # a skipped cell (its device is not there): why
SCORE = "score"  # a finished cell: what its test score is ("accuracy" or "mse")
RAN_PREFIX = "ran."  # a finished cell: how the learner actually ran (``ran.task_batching``: "auto" resolved)
CELLS, FAILURES = "cells", "failures"  # a suite run: how many cells, how many failed


def ran(key: str) -> str:
    return RAN_PREFIX + key


# -- which executor ran a cell (bench.run.execution, bench.run.executors), added when it ends -------------------
EXECUTOR = "executor"  # its kind: "in-process" or "ray"
EXECUTOR_NODE = "executor.node"  # the Ray node
EXECUTOR_CPUS = "executor.cpus"
EXECUTOR_ATTEMPT = "executor.attempt"  # 1 for the first attempt, 2 after a lost worker, ...
EXECUTOR_STARTED, EXECUTOR_ENDED = "executor.started", "executor.ended"
SLURM_JOB, SLURM_RESTARTS = "executor.slurm_job", "executor.slurm_restarts"  # job (array) id; times requeued
SLURM_FOLDER = "executor.slurm_folder"  # submitit's folder of the job (its files: how another invocation adopts it)  # seconds since the epoch, on the node
EXECUTOR_CONCURRENT_CELLS = "executor.concurrent_cells"  # most cells on its node at once while it ran

# -- where a process runs (bench.store.tracking.environment_tags): a cell's, from the process that ran it; a suite
# run's, from the invocation
GIT_COMMIT = "git_commit"  # also a cell's at creation: the commit of the invocation that claimed it
TORCH_VERSION, CUDA_VERSION, PYTHON = "torch_version", "cuda_version", "python"
CPU_MODEL, THREADS, DEVICE_NAME = "cpu_model", "threads", "device_name"
HOST, MACHINE = "host", "machine"

# -- a cell tested on the meta-parameters another run trained (a test condition added; bench.run.execution, when its
# run is created): where that training came from. The run's own code identity, commit and environment are its
# tester's; its training metrics (time, memory, final loss) were measured by the trainer, under these
TRAINED_BY = "trained_by"  # the run that meta-trained them (past a donor that was itself only tested)
TRAINED_CODE_IDENTITY = "trained_code_identity"
TRAINED_COMMIT = "trained_git_commit"
TRAINED_ENVIRONMENT = "trained_environment"
TRAINED_AS = {TRAINED_CODE_IDENTITY: CODE_IDENTITY, TRAINED_COMMIT: GIT_COMMIT,
              TRAINED_ENVIRONMENT: ENVIRONMENT}  # each, copied from this tag of the trainer

# -- who owns a RUNNING run (bench.store.ownership): written when the run is created, the heartbeat refreshed -------
OWNER_HOST, OWNER_MACHINE = "owner.host", "owner.machine"
OWNER_PID, OWNER_STARTED = "owner.pid", "owner.started"
OWNER_HEARTBEAT, OWNER_STALE_AFTER = "owner.heartbeat", "owner.stale_after"
# + a digest of a reader's machine: "<heartbeat> <that machine's monotonic clock>" when it first saw that heartbeat,
# written by the reader (another machine's clock is never compared with ours)
OWNER_SEEN_PREFIX = "owner.seen."

# -- the claim on a cell (bench.store.claims): tags of the claim's record, an MLflow experiment, not of a run -----
CLAIM_RUN_ID = "claim.run_id"
# MLflow's own tag of the experiments its AI gateway makes: its UI's experiment list (3.x) leaves out every experiment
# that has it, and claim records are live experiments (`mlflow gc` purges deleted ones) that nobody needs to browse
HIDDEN = "mlflow.experiment.isGateway"

# -- a suite whose seeds are a sequential plan (bench.consumers.sequential.running): a tag of its experiment ---------------------
SEEDS_PLAN = "seeds_plan"  # the plan its looks were run under (SeedsPlan.describe): a changed plan is refused

# -- `bench tune` (bench.consumers.tune): studies and their trials --------------------------------------------------
STUDY = "study"  # the study's name, on the study run and on each trial
STUDY_KEY = "study_key"  # a digest of the study's name: what the study run is found by (names may hold quotes)
TRIAL = "trial"  # the trial's number
STATE = "state"  # the trial's Optuna state by name (TrialState.COMPLETE.name, ...)
REASON = "reason"  # why a trial was pruned


def matching(values: Mapping[str, str]) -> str:
    """An MLflow filter string for the runs whose tags have all of ``values`` (tag -> value; a value may hold no
    quote: MLflow's filter strings have no escape for one)."""
    return " and ".join(f"tags.{name} = '{value}'" for name, value in values.items())
