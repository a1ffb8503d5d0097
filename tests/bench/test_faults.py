"""Fault injection: under each fault every cell ends FINISHED exactly once or FAILED with a reason, none RUNNING,
nothing run twice. (The SIGKILLed tune worker is in test_tune.py.)"""
import errno
from collections import Counter
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
import torch

from bench.__main__ import main
from bench.core.paths import SOURCE_DIRS
from bench.run.execution import CellLoop, SuiteRun, evaluation_fingerprint
from bench.run.executors.in_process import InProcess
from bench.spec.suite import expand, load_suites, parse_suite
from bench.core import tags as t
from bench.store import claims, ownership, provenance, tracking
from meta_bench.datasets import cache
from tests.suites import TINY, all_runs, cell_runs

ROOT = Path(__file__).resolve().parents[2]




def test_no_space_for_an_artifact_fails_that_cell_with_the_reason_and_the_suite_goes_on(write_suite, tracking_uri,
                                                                                           monkeypatch, capsys):
    real = tracking.log_file.__wrapped__

    def full_disk(client, run_id, write, name):
        if name == "meta_parameters.pt" and client.get_run(run_id).data.tags["learner"] == "maml":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        return real(client, run_id, write, name)

    monkeypatch.setattr(tracking, "log_file", full_disk)
    path = write_suite({"learners": ["maml", "fomaml/functional"]})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 1
    runs = {r.data.tags["learner"]: r for r in cell_runs(tracking_uri)}
    assert runs["maml"].info.status == "FAILED" and "No space left on device" in runs["maml"].data.tags["error"]
    assert runs["fomaml/functional"].info.status == "FINISHED"  # the suite went on
    assert not [r for r in all_runs(tracking_uri) if r.info.status == "RUNNING"]
    assert "No space left on device" in capsys.readouterr().err


def test_a_heartbeat_survives_write_errors_and_beats_again():
    calls, failures = [], 3

    def beat(run_id, now):
        calls.append(now)
        if len(calls) <= failures:
            raise ConnectionError("database is locked")

    said = []
    with ownership.Heartbeat(beat, lambda: ["run"], every=0.02, stale_after=60, warn=said.append) as heartbeat:
        deadline = time.time() + 10
        while len(calls) <= failures + 2 and time.time() < deadline:
            time.sleep(0.01)
    assert len(calls) > failures + 2  # the thread lived through the errors
    assert heartbeat.last_success >= calls[failures]
    heartbeat.check()  # recovered: nothing to stop
    assert len(said) == 2 and "database is locked" in said[0] and "writing again" in said[1]  # said, not swallowed


def test_an_owner_that_cannot_beat_stops_its_cells_instead_of_running_them_unowned(write_suite, tracking_uri,
                                                                                  monkeypatch, capsys):
    def unreachable(client, run_id, now):
        raise ConnectionError("the tracking server does not answer")

    monkeypatch.setattr(ownership, "HEARTBEAT_EVERY_S", 0.05)
    monkeypatch.setattr(ownership, "STALE_AFTER_S", 1.0)
    monkeypatch.setattr(tracking, "heartbeat", unreachable)
    long = {**TINY["training"], "meta_iterations": 300, "validate_every": 100}  # far longer than 1 s
    path = write_suite({"learners": ["maml"], "training": long})
    started = time.time()
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 1
    assert time.time() - started < 60
    (run,) = cell_runs(tracking_uri)
    assert run.info.status == "FAILED" and "stopped rather than run unowned" in run.data.tags["error"]
    assert not [r for r in all_runs(tracking_uri) if r.info.status == "RUNNING"]


def test_a_zombie_owner_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, and is not reaped until wait()
    try:
        deadline = time.time() + 10
        while ownership._process_state(child.pid) != "Z" and time.time() < deadline:
            time.sleep(0.05)
        tags = {**ownership.owner_tags(), ownership.PID: str(child.pid),
                ownership.STARTED: ownership.process_start(child.pid)}
        assert ownership.judge(tags).gone
    finally:
        child.wait()


def unshare_pid_namespace() -> str:
    """Why a new pid namespace cannot be made here ("" where it can)."""
    if shutil.which("unshare") is None:
        return "no unshare command (util-linux) on this machine"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"unshare --pid not permitted here: {probe.stderr.strip()[:200]}"


NO_PID_NAMESPACE = unshare_pid_namespace()


@pytest.mark.skipif(bool(NO_PID_NAMESPACE), reason=NO_PID_NAMESPACE)
def test_an_owner_on_this_host_in_another_pid_namespace_is_judged_by_its_heartbeat(tracking_uri):
    """Containers with host networking and cloned VMs share host names; their process ids are not ours."""
    code = "import json, time; from bench.store import ownership; print(json.dumps(ownership.owner_tags()), flush=True); " \
           "time.sleep(60)"
    # its own /proc, as in a container: its pid and start time are those of its namespace, not of ours
    other = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        tags = json.loads(other.stdout.readline())
        assert tags[ownership.HOST] == ownership.owner_tags()[ownership.HOST]
        assert tags[ownership.MACHINE] != ownership.machine_identity()
        assert not ownership.judge(tags).gone  # beating: alive, whatever its pid means here
        client = tracking.client_for(tracking_uri)
        experiment = tracking.experiment_id(client, "tiny")
        run_id = client.create_run(experiment, tags={"role": "cell", **tags}).info.run_id
        assert tracking.close_orphaned(client, experiment) == 0
        assert client.get_run(run_id).info.status == "RUNNING"
        stale = {**tags, ownership.HEARTBEAT: f"{time.time() - 2 * ownership.STALE_AFTER_S:.0f}"}
        assert ownership.judge(stale).gone  # silent: gone at once, its clock being ours (one kernel)
    finally:
        other.kill()
        other.wait()


def test_a_claim_whose_insert_is_slow_cannot_also_win(tracking_uri, monkeypatch):
    """The client stamps a run's start time before the insert, which may wait long for a lock: a winner decided by
    start times and a settle delay had both claimants run the cell. The store's reservation has one winner."""
    cell = expand(parse_suite({**TINY, "learners": ["maml"]}))[0]
    client = tracking.client_for(tracking_uri)
    experiment = tracking.experiment_id(client, "tiny")
    store = client._tracking_client.store
    real_create = store.create_run
    stamped = threading.Event()

    def slow_insert(*args, **kwargs):
        if threading.current_thread().name == "slow":  # stamped already (by the client); the insert waits
            stamped.set()
            time.sleep(2.0)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(store, "create_run", slow_insert)
    loops = {name: CellLoop(SuiteRun("tiny", client, experiment, "parent", False, False, False, print),
                            InProcess(False)) for name in ("slow", "fast")}
    slow = threading.Thread(target=loops["slow"]._claim, args=(cell, 0), name="slow")
    slow.start()
    stamped.wait(10)
    loops["fast"]._claim(cell, 0)  # claims while the slow insert waits
    slow.join()
    claimed = {name: list(loop.in_flight) for name, loop in loops.items()}
    assert claimed["fast"] and not claimed["slow"], claimed
    assert loops["slow"].waiting  # it waits for the winner instead
    assert [r.info.run_id for r in cell_runs(tracking_uri)] == claimed["fast"]


def test_a_stopped_owner_is_waited_for_with_what_is_waited_for_then_taken_over(write_suite, tmp_path):
    """SIGSTOP: the process exists but never beats again. The second invocation says what it waits for, takes
    the cell over once the heartbeat is stale (closing the stopped run as interrupted) and finishes it once."""
    uri = f"sqlite:///{tmp_path / 'stopped.db'}"
    slow = {**TINY["training"], "meta_iterations": 40, "validate_every": 20}
    path = write_suite({"learners": ["maml"], "training": slow})
    # Both invocations start together: the one that claims the cell is stopped at once, and the other, past the
    # same start-up, reaches the cell moments later, so a stale limit of 8 s (not one covering a whole process
    # start-up on a loaded machine) still finds the stopped owner beating-fresh: it has to wait for it.
    env = {**os.environ, "METABENCH_HEARTBEAT_S": "0.2", "METABENCH_STALE_AFTER_S": "8", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "bench", "run", str(path), "--tracking-uri", uri, "--no-progress",
               "--no-report", "--max-wait", "120"]
    both = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    try:
        deadline, owner, seen = time.time() + 120, None, {}
        while time.time() < deadline and owner is None:
            time.sleep(0.2)
            running = {r.info.run_id: int(r.data.tags[ownership.PID]) for r in cell_runs_or_none(uri)
                       if r.info.status == "RUNNING"}
            # seen on two looks: the claimant's run, not one a losing claimant makes and deletes at once
            owner = next((pid for run_id, pid in running.items() if run_id in seen), None)
            seen = running
        assert owner in [p.pid for p in both], f"no invocation seen running the cell (owner {owner})"
        first, other = sorted(both, key=lambda p: p.pid != owner)  # first: the owner
        stop_outside_a_write(first, tmp_path / "stopped.db")
        out, err = other.communicate(timeout=300)
        second = subprocess.CompletedProcess(other.args, other.returncode, out, err)
    finally:
        for process in both:
            process.kill()
            process.wait()
    assert second.returncode == 0, second.stderr[-2000:]
    assert "waiting" in second.stdout and f"pid {first.pid}" in second.stdout
    client = tracking.client_for(uri)
    tracking.close_orphaned(client, client.get_experiment_by_name("tiny").experiment_id)  # the killed suite run
    runs = cell_runs(uri)
    outcomes = sorted((r.info.status, r.data.tags.get("outcome")) for r in runs)
    assert outcomes == [("FAILED", "interrupted"), ("FINISHED", "finished")]
    assert not [r for r in all_runs(uri) if r.info.status == "RUNNING"]


def stop_outside_a_write(process, database, attempts=50):
    """SIGSTOP ``process`` at a moment it holds no lock on the SQLite store: a process stopped inside a transaction
    blocks every other writer of the file until it resumes (SQLite's own limit, said in the README; CI hit it once as
    "database is locked"), which is not what this test is about. A stop that lands inside one is undone (SIGCONT)
    and tried again."""
    for _ in range(attempts):
        process.send_signal(signal.SIGSTOP)
        probe = sqlite3.connect(database, timeout=0.5)
        try:
            probe.execute("BEGIN EXCLUSIVE")  # only if nobody holds a lock (a stopped reader blocks commits too)
            probe.rollback()
            return
        except sqlite3.OperationalError:  # stopped inside a write
            process.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError(f"pid {process.pid} held the store's write lock at each of {attempts} stops")


def cell_runs_or_none(uri):
    try:
        return cell_runs(uri)
    except (MlflowException, sqlalchemy.exc.SQLAlchemyError):  # the store is still being created by the invocation
        return []


def test_a_cell_held_by_a_live_invocation_is_left_to_a_later_run_after_the_wait_bound(write_suite, tracking_uri,
                                                                                      capsys):
    cell = expand(parse_suite({**TINY, "learners": ["maml"]}))[0]
    client = tracking.client_for(tracking_uri)
    experiment = tracking.experiment_id(client, "tiny")
    holder = tracking.start_run(client, experiment, "other", {"role": "cell", "config_hash": cell.config_hash})
    assert claims.reserve(client, "tiny", cell.config_hash, 0, holder)  # a live claim: this very process
    path = write_suite({"learners": ["maml"]})
    args = ["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report", "--max-wait", "1"]
    assert main(args) == 1
    err = capsys.readouterr()
    assert f"run {holder}" in err.out and "left to a later run" in err.err
    assert client.get_run(holder).info.status == "RUNNING"  # left alone: its owner lives
    assert len(cell_runs(tracking_uri)) == 1


def test_concurrent_forced_invocations_run_each_cell_once(write_suite, tmp_path):
    uri = f"sqlite:///{tmp_path / 'force.db'}"
    path = write_suite({"learners": ["fomaml/functional"], "grid": {**TINY["grid"], "seeds": [0, 1]}})
    command = [sys.executable, "-m", "bench", "run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on a small machine: no thread oversubscription
    assert subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    processes = [subprocess.Popen(command + ["--force"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        results = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert [p.returncode for p in processes] == [0, 0], [err[-1500:] for _, err in results]
    finished = Counter(r.data.tags["config_hash"] for r in cell_runs(uri) if r.info.status == "FINISHED")
    assert list(finished.values()) == [2, 2]  # each cell once before, then once more between both: not twice


def test_code_edited_after_the_process_loaded_it_is_never_logged(write_suite, tmp_path):
    """The identity names the code the process loaded: an edit on disk in between is refused, not logged under
    the new code's identity (reproduced by editing finetune after import)."""
    root = tmp_path / "project"  # laid out as an installed copy (bench, meta_bench/algorithms, ...): it runs first
    for package in provenance.RESULT_PACKAGES:
        shutil.copytree(SOURCE_DIRS[package], root / ("" if package == "bench" else "meta_bench") / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    uri = f"sqlite:///{tmp_path / 'edited.db'}"
    path = write_suite({"learners": ["finetune"]})
    script = textwrap.dedent(f"""
        import sys
        from bench.__main__ import main
        import bench.run.runner  # the learner modules are loaded now
        learner = {str(root / 'meta_bench' / 'algorithms' / 'finetune.py')!r}
        import meta_bench.algorithms.finetune
        assert meta_bench.algorithms.finetune.__file__ == learner, meta_bench.algorithms.finetune.__file__
        open(learner, "a").write("\\n# edited after the process loaded it\\n")
        sys.exit(main(["run", {str(path)!r}, "--tracking-uri", {uri!r}, "--no-progress", "--no-report"]))
    """)
    # the copy has no results/cache: the decoded glyphs this process uses, not a ~25 s rebuild from the fonts
    env = {**os.environ, "METABENCH_CACHE": str(cache.CACHE_DIR)}
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "algorithms/finetune.py changed on disk after this process loaded it" in done.stderr
    assert not [r for r in all_runs(uri) if r.info.status in ("FINISHED", "RUNNING") and r.data.tags.get("role") ==
                "cell"]


def test_runs_scored_by_other_dataset_code_are_never_paired(monkeypatch):
    """The evaluation fingerprint names the code that made and scored the episodes, not only a hand-kept
    version: editing the sinusoid targets changes the sinusoid fingerprint and no other."""
    sinusoid = expand(parse_suite({**TINY, "dataset": {"name": "sinusoid"}, "learners": ["maml"],
                                   "grid": {**TINY["grid"], "n_way": [1]}}))[0]
    glyphs = expand(parse_suite({**TINY, "learners": ["maml"]}))[0]
    before = {c.dataset.name: evaluation_fingerprint(c) for c in (sinusoid, glyphs)}
    edited = dict(provenance.LOADED)
    targets = b"y = amplitude[:, None, None] * np.sin"
    edited["datasets/sinusoid.py"] = edited["datasets/sinusoid.py"].replace(targets,
                                                                            b"y = 2 * amplitude[:, None, None] * np.sin")
    assert edited["datasets/sinusoid.py"] != provenance.LOADED["datasets/sinusoid.py"]  # the edit took
    monkeypatch.setattr(provenance, "LOADED", edited)
    provenance.evaluation_identity.cache_clear()
    try:
        after = {c.dataset.name: evaluation_fingerprint(c) for c in (sinusoid, glyphs)}
    finally:
        provenance.evaluation_identity.cache_clear()
    assert after["sinusoid"] != before["sinusoid"] and after["glyphs"] == before["glyphs"]


def test_a_run_records_where_it_ran_and_is_not_reused_under_other_threads(write_suite, tracking_uri, tmp_path):
    """Timings of 1 and 2 threads are not one cell; where --reuse-other-code mixes them, the report says so."""
    from bench.consumers.report import build_report

    args = ["--tracking-uri", tracking_uri, "--no-progress", "--no-report"]
    one = write_suite({"learners": ["fomaml/functional"], "report": {"output_dir": str(tmp_path / "reports")}})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert main(["run", str(one), *args]) == 0
        torch.set_num_threads(2)
        assert main(["run", str(one), *args]) == 0
        two = write_suite({"learners": ["fomaml/functional", "finetune"],
                           "report": {"output_dir": str(tmp_path / "reports")}}, name="two.yaml")
        torch.set_num_threads(1)
        assert main(["run", str(two), *args, "--reuse-other-code"]) == 0
    finally:
        torch.set_num_threads(threads)
    runs = sorted(cell_runs(tracking_uri), key=lambda r: r.info.start_time)
    assert [r.data.tags["threads"] for r in runs] == ["1", "2", "1"]  # the second ran again; the third is finetune
    for run in runs:
        assert run.data.tags["machine"] == ownership.machine_identity() and run.data.tags["cpu_model"]
        assert run.data.tags["environment"].startswith(f"in-process threads={run.data.tags['threads']} ")
    report = build_report("tiny", tracking_uri, load_suites(two)).read_text()
    assert "timed in more than one execution environment" in report and "threads=2" in report


def test_a_store_error_reading_the_holder_is_not_read_as_nobody_holds_the_cell(tracking_uri, monkeypatch):
    """Only a run deleted for good frees its claim; a store that fails to answer must stop the claim, not let a
    second claimant run the cell beside a live holder."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    cell = expand(parse_suite({**TINY, "learners": ["maml"]}))[0]
    client = tracking.client_for(tracking_uri)
    experiment = tracking.experiment_id(client, "tiny")
    holder = tracking.start_run(client, experiment, "live", {"role": "cell", "config_hash": cell.config_hash})
    assert claims.reserve(client, "tiny", cell.config_hash, 0, holder)
    for code, expect_raise in ((INTERNAL_ERROR, True), (RESOURCE_DOES_NOT_EXIST, False)):
        def failing(run_id, code=code):
            raise MlflowException("the store did not answer", error_code=code)

        monkeypatch.setattr(client, "get_run", failing)
        if expect_raise:
            with pytest.raises(MlflowException, match="did not answer"):
                claims.holder(client, "tiny", cell.config_hash)
        else:
            assert claims.holder(client, "tiny", cell.config_hash).run is None


def mlflow_gc(uri: str) -> None:
    """MLflow's own garbage collection, as a user runs it: every deleted experiment and run purged."""
    done = subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri, "--tracking-uri", uri],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def between_claim_and_result(monkeypatch, step) -> None:
    """Run ``step()`` after each cell has computed its result, before the result is logged."""
    from bench.run.executors import attempt

    real = attempt.run_cell

    def then_step(*args, **kwargs):
        result = real(*args, **kwargs)
        step()
        return result

    monkeypatch.setattr(attempt, "run_cell", then_step)  # where every executor runs a cell


def test_mlflow_gc_between_a_claim_and_its_result_erases_no_claim(write_suite, tracking_uri, monkeypatch):
    """`mlflow gc` purges every deleted experiment: claims kept as deleted ones were all erased, and the owner's
    finished result was thrown away as taken over (another invocation could claim generation 0 again)."""
    between_claim_and_result(monkeypatch, lambda: mlflow_gc(tracking_uri))
    path = write_suite({"learners": ["fomaml/functional"]})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    (run,) = cell_runs(tracking_uri)
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "finished"
    client = tracking.client_for(tracking_uri)
    latest = claims.latest(client, "tiny", run.data.tags["config_hash"])
    assert (latest.generation, latest.run_id) == (0, run.info.run_id)  # still there for the next claimant
    # the UI's experiment list (it leaves out what carries MLflow's hidden tag) shows the suite, not its claims
    listed = client.search_experiments(filter_string=f"tags.`{t.HIDDEN}` IS NULL")
    assert sorted(e.name for e in listed) == ["Default", "tiny"]


def test_an_owner_whose_claim_record_is_gone_stops_and_says_the_store_is_damaged(write_suite, tracking_uri,
                                                                                monkeypatch, capsys):
    """Only damage removes a claim record now (one deleted by hand, then purged): the owner cannot tell whether
    another invocation runs its cell, so it stops, logging nothing, rather than read it as a lost claim."""
    client = tracking.client_for(tracking_uri)

    def erase_the_claim():
        (record,) = [e for e in client.search_experiments() if t.CLAIM_RUN_ID in e.tags]
        client.delete_experiment(record.experiment_id)
        mlflow_gc(tracking_uri)

    between_claim_and_result(monkeypatch, erase_the_claim)
    path = write_suite({"learners": ["fomaml/functional", "finetune"]})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 1
    err = capsys.readouterr().err
    assert "stopped: the claim record 'tiny::claim::" in err and "is gone: claim records were removed" in err, err
    (run,) = cell_runs(tracking_uri)  # the first cell; the second was never claimed
    assert run.info.status == "FAILED" and "is gone: claim records were removed" in run.data.tags["error"]
    assert not [r for r in all_runs(tracking_uri) if r.info.status == "RUNNING"]


def test_claim_records_an_older_version_deleted_are_kept_from_mlflow_gc(write_suite, tracking_uri, capsys):
    """A store of an older version holds its claims as deleted experiments: the next `bench run` makes them live,
    so a later `mlflow gc` erases none of them (here a live holder's, which must go on holding its cell)."""
    cell = expand(parse_suite({**TINY, "learners": ["maml"]}))[0]
    client = tracking.client_for(tracking_uri)
    experiment = tracking.experiment_id(client, "tiny")
    holder = tracking.start_run(client, experiment, "other", {"role": "cell", "config_hash": cell.config_hash})
    old = client.create_experiment(f"tiny::claim::{cell.config_hash}::0", tags={t.CLAIM_RUN_ID: holder})
    client.delete_experiment(old)  # as older versions kept a claim
    path = write_suite({"learners": ["maml"]})
    args = ["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report", "--max-wait", "1"]
    assert main(args) == 1  # the cell is held by its live holder, and left to a later run
    assert "kept 1 claim record(s) of an older version" in capsys.readouterr().out
    mlflow_gc(tracking_uri)
    held = claims.holder(client, "tiny", cell.config_hash)
    assert (held.latest.generation, held.latest.run_id, held.alive) == (0, holder, True)
    assert len(cell_runs(tracking_uri)) == 1


def on_another_machine(client, run_id: str, beat: float) -> None:
    """Make ``run_id``'s owner another machine's (its process ids and clock are not ours), last beating at ``beat``
    by that machine's clock."""
    tracking.set_tags(client, run_id, {ownership.HOST: "elsewhere", ownership.MACHINE: "other-boot/pid:[1]",
                                       ownership.HEARTBEAT: f"{beat:.3f}"})


def test_a_live_owner_whose_clock_is_hours_behind_keeps_its_cell(write_suite, tracking_uri, capsys):
    """Its heartbeat, by its own clock, reads three hours old here: compared with our clock, the owner was judged
    gone and its cell run a second time beside it."""
    cell = expand(parse_suite({**TINY, "learners": ["maml"]}))[0]
    client = tracking.client_for(tracking_uri)
    experiment = tracking.experiment_id(client, "tiny")
    holder = tracking.start_run(client, experiment, "other", {"role": "cell", "config_hash": cell.config_hash})
    on_another_machine(client, holder, time.time() - 3 * 3600)
    assert claims.reserve(client, "tiny", cell.config_hash, 0, holder)
    path = write_suite({"learners": ["maml"]})
    args = ["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report", "--max-wait", "1"]
    assert main(args) == 1
    out = capsys.readouterr()
    assert f"run {holder}" in out.out and "left to a later run" in out.err
    assert client.get_run(holder).info.status == "RUNNING" and len(cell_runs(tracking_uri)) == 1


@pytest.mark.parametrize("skew_h", [-3, 3], ids=["behind", "ahead"])
def test_another_machines_owner_is_gone_once_its_heartbeat_is_seen_unchanged_for_its_limit(skew_h, tracking_uri,
                                                                                           monkeypatch):
    """Its heartbeat's age is read from this machine's clock watching it, from when it was first seen here (kept
    on the run, so a later invocation goes on from there), never from the owner's clock."""
    client = tracking.client_for(tracking_uri)
    experiment = tracking.experiment_id(client, "tiny")
    run_id = tracking.start_run(client, experiment, "other", {"role": "cell"})
    theirs = time.time() + skew_h * 3600
    on_another_machine(client, run_id, theirs)
    limit = ownership.STALE_AFTER_S
    here = [ownership.watch_clock()]
    monkeypatch.setattr(ownership, "watch_clock", lambda: here[0])
    assert tracking.close_orphaned(client, experiment) == 0  # first seen: alive, whatever its clock says
    here[0] += 2 * limit
    tracking.heartbeat(client, run_id, theirs + 30)  # it beat meanwhile: seen afresh
    assert tracking.close_orphaned(client, experiment) == 0
    here[0] += limit / 2
    assert tracking.close_orphaned(client, experiment) == 0  # unchanged for half its limit
    here[0] += limit
    assert tracking.close_orphaned(client, experiment) == 1  # unchanged for longer than its limit: gone
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags["outcome"]) == ("FAILED", "interrupted")


def test_the_evaluation_identity_covers_the_dataset_modules_a_dataset_imports(monkeypatch):
    """folder's episodes are made by its class split and the shared image decoding too: editing either changes its
    evaluation identity (and glyphs', which imports neither, stays)."""
    before = {d: provenance.evaluation_identity(d) for d in ("folder", "glyphs")}
    for module in ("datasets/class_split.py", "datasets/image_decoding.py"):
        edited = dict(provenance.LOADED)
        edited[module] += b"\n# edited\n"
        monkeypatch.setattr(provenance, "LOADED", edited)
        provenance.evaluation_identity.cache_clear()
        try:
            after = {d: provenance.evaluation_identity(d) for d in ("folder", "glyphs")}
        finally:
            provenance.evaluation_identity.cache_clear()
        assert after["folder"] != before["folder"] and after["glyphs"] == before["glyphs"], module
