"""The Ray executor on a real local Ray cluster (2 CPUs, started here) and a real `mlflow server` (started here):
every cell finished exactly once, the in-process executor's float64 scores, a SIGKILLed worker survived, and the
in-process path never importing Ray."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient

from bench.__main__ import main
from bench.store import tracking
from bench.core import interrupts
from bench.run.execution import Attempt, CellLoop, Done, SuiteRun, cell_tags
from bench.run.executors.ray_tasks import RayExecutor, RayOptions
from bench.consumers.report import build_report
from bench.run.runner import run_suite
from bench.spec.suite import expand, parse_suite
from bench.run.training import run_cell
from tests.suites import TINY, cell_runs

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
# the execution fixed (not "auto"): the driver and the workers have other thread budgets, so the autotuner may choose
# other (exact) executions, equal only to float64 rounding; these cells compare the two executors' numbers bit for bit
FOUR_CELLS = {**TINY, "learners": [{"name": name, "config": {"task_batching": "loop"}}
                                   for name in ("fomaml/functional", "maml")],
              "grid": {**TINY["grid"], "seeds": [0, 1]}, "training": {**TINY["training"], "dtype": "float64"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head on this machine with 2 CPUs and no GPU, stopped at the end. Token authentication off for the head
    and every client of this module: Ray >= 2.59 turns it on for a head started while ~/.ray/auth_token exists (any
    earlier local `ray.init()` writes one) but not for `ray.init(address=...)`, which then cannot connect."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RAY_AUTH_MODE", "disabled")
    port = free_port()
    subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, capture_output=True,
                   timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)
        patch.undo()


@pytest.fixture()
def mlflow_server(tmp_path):
    """`mlflow server` on a free localhost port: SQLite backend, artifacts served from a local folder."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not come up on {url} (exit {server.poll()})")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)



def scores_by_cell(uri: str) -> dict[str, tuple[list[float], float]]:
    """Per finished cell: its per-episode test scores and its final meta-training loss."""
    client = MlflowClient(uri)
    scores = {}
    for run in cell_runs(uri):
        if run.info.status == "FINISHED":
            path = client.download_artifacts(run.info.run_id, "test_episodes.csv")
            scores[run.data.tags["config_hash"]] = (pd.read_csv(path)["accuracy"].tolist(),
                                                    run.data.metrics["final_train_loss"])
    return scores


def assert_each_cell_finished_once(uri: str, cells: int) -> list:
    runs = cell_runs(uri)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted({r.data.tags["config_hash"] for r in finished}) == sorted(r.data.tags["config_hash"]
                                                                             for r in finished)
    assert len(finished) == cells
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return runs


def test_ray_runs_every_cell_once_with_the_in_process_scores_into_a_real_mlflow_server(ray_cluster, mlflow_server,
                                                                                        tmp_path):
    # cells of ~1 s, not ~0.2 s: long enough that the two workers overlap even while the second one starts
    longer = {**FOUR_CELLS["training"], "meta_iterations": 30, "validate_every": 15}
    raw = {**FOUR_CELLS, "training": longer, "report": {"output_dir": str(tmp_path / "reports")}}
    suite, text = parse_suite(raw), yaml.safe_dump(raw)
    local = f"sqlite:///{tmp_path / 'local.db'}"
    run_suite(suite, text, local, progress=False)  # this process's threads; each Ray cell gets 1
    with RayExecutor(RayOptions(address=ray_cluster, max_parallel=2)) as executor:
        outcomes = run_suite(suite, text, mlflow_server, progress=False, executor=executor)
    assert sorted(o.outcome for o in outcomes) == ["finished"] * 4
    runs = assert_each_cell_finished_once(mlflow_server, 4)
    expected, got = scores_by_cell(local), scores_by_cell(mlflow_server)
    assert len(expected) == 4 and got == expected  # float64, exactly
    for run in runs:
        assert run.data.tags["executor"] == "ray" and run.data.tags["executor.concurrent_cells"] in ("1", "2")
        # where it ran is the worker's: its thread budget (the driver has torch's default), its node
        assert run.data.tags["threads"] == "1" and run.data.tags["executor.node"] and run.data.tags["cpu_model"]
        assert [m.step for m in MlflowClient(mlflow_server).get_metric_history(run.info.run_id, "train_loss")] == \
            list(range(30))  # the curves came back with the result
    # two cells ran at once on 2 CPUs (the last cell may run alone: whether it does depends on the schedule)
    assert "2" in {r.data.tags["executor.concurrent_cells"] for r in runs}
    # resuming on Ray reuses every finished cell
    with RayExecutor(RayOptions(address=ray_cluster, max_parallel=2)) as executor:
        again = run_suite(suite, text, mlflow_server, progress=False, executor=executor)
    assert [o.outcome for o in again] == ["reused"] * 4
    report = build_report("tiny", mlflow_server, [suite])
    assert "maml" in report.read_text() and "fomaml/functional" in report.read_text()


def worker_pids() -> list[int]:
    """Processes whose title Ray set to the cell task's name while it runs."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::run_cell_remotely"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def start_driver(ray_cluster: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """`bench run --executor ray` in its own process, returned once a cell is training on a worker."""
    # cells of 1.5-3 s each (1-1.8 s at 100 iterations on this machine): a signal 0.5 s into one lands mid-cell
    raw = {**FOUR_CELLS, "training": {**FOUR_CELLS["training"], "meta_iterations": 150, "validate_every": 150}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    driver = subprocess.Popen([sys.executable, "-m", "bench", "run", str(path), "--executor", "ray", "--address",
                               ray_cluster, "--max-parallel", "2", "--tracking-uri", uri, "--no-report",
                               "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    deadline = time.monotonic() + 120
    while not worker_pids():
        assert driver.poll() is None and time.monotonic() < deadline, "no cell started"
        time.sleep(0.1)
    # a cell task runs (its run was RUNNING before it was submitted): interrupted now, not after some time, which on
    # a quiet machine could outlast the cell
    assert worker_pids(), "the cell ended before the test could interrupt it"
    return driver, uri


def test_a_test_condition_added_later_is_tested_on_a_worker_from_the_saved_meta_parameters(ray_cluster, tmp_path):
    """The trained meta-parameters travel with the attempt to the worker, which tests them without training."""
    base = {**TINY, "dataset": {"name": "sinusoid"}, "learners": [{"name": "maml", "config": {"inner_lr": 0.01}}],
            "grid": {**TINY["grid"], "n_way": [1], "k_shot": [4]},
            "training": {**TINY["training"], "dtype": "float64"},
            "evaluation": {"test_episodes": 5, "query": 5, "inner_steps": [1]}}
    store = f"sqlite:///{tmp_path / 'm.db'}"
    for evaluation in ({"inner_steps": [1]}, {"inner_steps": [1, 3], "k_shot": [4, 6]}):
        raw = {**base, "evaluation": {**base["evaluation"], **evaluation}}
        with RayExecutor(RayOptions(address=ray_cluster, max_parallel=1)) as executor:
            (outcome,) = run_suite(parse_suite(raw), yaml.safe_dump(raw), store, progress=False, executor=executor)
        assert outcome.outcome == "finished", outcome.detail
    first, second = sorted(cell_runs(store), key=lambda r: r.info.start_time)
    assert second.data.tags["trained_by"] == first.info.run_id and second.data.tags["executor"] == "ray"
    assert second.data.metrics["train_seconds_total"] == first.data.metrics["train_seconds_total"]
    assert MlflowClient(store).get_metric_history(second.info.run_id, "train_loss") == []  # not one meta-iteration
    assert second.data.metrics["test_mse.k4.s1"] == first.data.metrics["test_mse"]  # the same model, the same test


def test_a_sequential_suite_runs_its_looks_on_ray_with_the_in_process_decisions(ray_cluster, tmp_path):
    """The looks' cells go through the executor like any others: on Ray the float64 variants are equivalent at the
    first look and the variant nothing else needs stops at 3 seeds, as in process (tests/bench/test_sequential.py)."""
    from bench.consumers.sequential.running import run_sequential
    from bench.spec.suite import suites_from_text
    from tests.bench.test_sequential import SUITE

    store, text = f"sqlite:///{tmp_path / 'm.db'}", yaml.safe_dump(SUITE)
    with RayExecutor(RayOptions(address=ray_cluster, max_parallel=2)) as executor:
        run_sequential(suites_from_text(text, "sequential on ray"), store, echo=lambda line: None, progress=False,
                       executor=executor)
    seeds = {}
    for run in cell_runs(store, "seq"):
        assert run.data.tags["executor"] == "ray" and run.data.tags["outcome"] == "finished"
        seeds.setdefault(run.data.tags["learner"], []).append(int(run.data.tags["axis.seed"]))
    assert {learner: sorted(s) for learner, s in seeds.items()} == {
        "fomaml/deepcopy": [0, 1, 2, 3], "fomaml/functional": [0, 1, 2], "finetune": [0, 1, 2, 3]}


def test_ctrl_c_cancels_the_cells_in_flight_and_ends_their_runs_killed(ray_cluster, tmp_path):
    """The driver in this process, on a Ray connection it did not open (so it will not shut Ray down, which would
    end the job's workers anyway): a remembered Ctrl-C must cancel the tasks themselves. Cells that cannot end on
    their own (ten million meta-iterations): the Ctrl-C comes once a cell task runs (an event, not a duration), and a
    task still running 5 s after it was not cancelled."""
    raw = {**FOUR_CELLS, "training": {**FOUR_CELLS["training"], "meta_iterations": 10_000_000,
                                      "validate_every": 10_000_000}}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def press_ctrl_c_mid_cell():
        deadline = time.monotonic() + 120
        while not worker_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        interrupts.record()  # what the runner's SIGINT handler records

    ray.init(address=ray_cluster, log_to_driver=False, configure_logging=False)
    try:
        presser = threading.Thread(target=press_ctrl_c_mid_cell)
        presser.start()
        with pytest.raises(KeyboardInterrupt), RayExecutor(RayOptions(max_parallel=2)) as executor:
            run_suite(parse_suite(raw), yaml.safe_dump(raw), uri, progress=False, executor=executor)
        presser.join()
        deadline = time.monotonic() + 5
        while worker_pids():  # cancelled, not left computing for nobody
            assert time.monotonic() < deadline, "a cell task outlived the driver's Ctrl-C"
            time.sleep(0.2)
    finally:
        interrupts.reset()
        ray.shutdown()
    runs = cell_runs(uri)
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert killed and all(r.data.tags["outcome"] == "interrupted" for r in killed)


def test_a_worker_killed_mid_cell_leaves_no_run_running_and_every_cell_finishes_once(ray_cluster, tmp_path):
    driver, uri = start_driver(ray_cluster, tmp_path)
    victim = worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    runs = assert_each_cell_finished_once(uri, 4)
    lost = [r for r in runs if r.data.tags.get("outcome") == "interrupted"]
    assert len(lost) == 1 and lost[0].info.status == "FAILED" and "the worker died" in lost[0].data.tags["error"]
    retried = [r for r in runs if r.data.tags.get("config_hash") == lost[0].data.tags["config_hash"]
               and r.info.status == "FINISHED"]
    assert retried[0].data.tags["executor.attempt"] == "2"
    assert "worker lost" in output


def test_the_in_process_executor_never_imports_ray(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**TINY, "learners": ["fomaml/functional"]}))
    script = ("import sys; from bench.__main__ import main; "
              f"code = main(['run', {str(path)!r}, '--tracking-uri', 'sqlite:///{tmp_path / 'mlflow.db'}', "
              "'--no-progress', '--no-report']); "
              "assert code == 0, code; assert 'ray' not in sys.modules, 'ray was imported'; print('no ray')")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "no ray" in done.stdout, done.stdout + done.stderr


def test_bad_executor_input_is_refused_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**TINY, "grid": {**TINY["grid"], "devices": ["cuda:1"]}}))
    store = tmp_path / "mlflow.db"
    assert main(["run", str(path), "--executor", "ray", "--tracking-uri", f"sqlite:///{store}"]) == 2
    assert "device 'cuda:1'" in capsys.readouterr().err and not store.exists()
    assert main(["run", str(path), "--address", "auto", "--tracking-uri", f"sqlite:///{store}"]) == 2
    assert "--address is for --executor ray" in capsys.readouterr().err and not store.exists()
    assert main(["run", str(path), "--executor", "ray", "--max-parallel", "-1",
                 "--tracking-uri", f"sqlite:///{store}"]) == 2
    assert "--max-parallel must be >= 0" in capsys.readouterr().err and not store.exists()


def test_a_worker_on_other_code_fails_its_cell_instead_of_logging_under_the_drivers_identity(tmp_path):
    """The driver's check, fed what a worker on another commit would send back (no cluster needed)."""
    cell = expand(parse_suite({**TINY, "learners": ["fomaml/functional"]}))[0]
    client = tracking.client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracking.experiment_id(client, "tiny")
    run_id = tracking.start_run(client, experiment, cell.title, cell_tags(cell, "", "ray"))
    loop = CellLoop(SuiteRun("tiny", client, experiment, "", False, False, False, print), RayExecutor(RayOptions()))
    loop._record(Done(Attempt(cell, run_id, 0, 0), run_cell(cell), code="0" * 16, tags={"executor.node": "other"}))
    (outcome,) = loop.outcomes
    assert outcome.outcome == "failed" and "runs other code" in outcome.detail
    stored = client.get_run(run_id)
    assert stored.info.status == "FAILED" and "test_accuracy" not in stored.data.metrics
