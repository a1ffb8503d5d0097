"""Cells that resume mid-training: interrupted at a meta-iteration and claimed again, a cell resumes from its last
checkpoint and ends exactly as a cell that never stopped (float64 on the CPU), curves included."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bench.run import checkpoint
from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite
from tests.suites import TINY, cell_runs

ROOT = Path(__file__).resolve().parents[2]


class Stopped(Exception):
    """What stops the first attempt: a lost owner, as ``between_iterations`` raises it."""


def _cell(learner, backbone=None, **training):
    raw = {**TINY, "learners": [learner], "backbone": {**TINY["backbone"], **(backbone or {})},
           "training": {**TINY["training"], "meta_iterations": 9, "validate_every": 3, "dtype": "float64",
                        "warmup_iterations": 1, **training}}
    return expand(parse_suite(raw))[0]


def _run(cell, stop_at=None):
    curves = []
    calls = []

    def between():
        calls.append(1)
        if len(calls) == stop_at:
            raise Stopped

    result = run_cell(cell, on_train=lambda i, v: curves.append(("train", i, v)),
                      on_validation=lambda i, v: curves.append(("val", i, v)), between_iterations=between)
    return result, curves


@pytest.mark.parametrize("learner, backbone, stop_at", [
    ("maml", None, 5), ("metasgd", None, 2), ("reptile", None, 7), ("anil", None, 4),
    ("maml", {"batch_norm": "running_stats"}, 4),  # buffers and the loop execution the autotuner chose
    # MAML++: first order in epoch 0 (iterations 0-3), second order after; resumed in the first, decided again
    ({"name": "maml", "config": {"first_order_epochs": 1, "epoch_iterations": 4}}, None, 3)])
def test_a_cell_stopped_mid_training_resumes_and_ends_as_one_that_never_stopped(learner, backbone, stop_at, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("METABENCH_CHECKPOINTS", str(tmp_path))
    cell = _cell(learner, backbone, checkpoint_every=0)
    whole, whole_curves = _run(cell)
    assert list(tmp_path.iterdir()) == []  # removed once the cell was done
    with pytest.raises(Stopped):
        _run(cell, stop_at)
    assert len(list(tmp_path.iterdir())) == 1
    resumed, resumed_curves = _run(cell)
    # stopped inside meta-iteration stop_at - 1: the last checkpoint was saved after the one before it
    assert resumed.execution["resumed_from"] == str(stop_at - 1)
    assert "resumed_from" not in whole.execution
    assert whole.state_dict.keys() == resumed.state_dict.keys()
    for name, value in whole.state_dict.items():
        assert torch.equal(value, resumed.state_dict[name]), name
    assert whole.test_scores == resumed.test_scores and whole.condition_scores == resumed.condition_scores
    assert whole_curves == resumed_curves  # the points before the stop are emitted again, for the new run
    for name in ("final_val_score", "final_train_loss", "train_timed_steps"):
        assert whole.metrics[name] == resumed.metrics[name], name
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_a_signal_saves_the_training_state_and_sigterm_also_stops_the_cell(signum, tmp_path, monkeypatch):
    """What Slurm sends before a time limit (``--signal``): SIGUSR1 saves at the next meta-iteration boundary and
    trains on; SIGTERM saves and stops the cell, which then resumes from there."""
    monkeypatch.setenv("METABENCH_CHECKPOINTS", str(tmp_path))
    cell = _cell("maml", checkpoint_every=1e9)  # no checkpoint but the one asked for
    whole, _ = _run(cell)
    saved = []

    def signal_at_the_third():
        if len(saved) == 2:
            os.kill(os.getpid(), signum)
        saved.append(sorted(p.name for p in tmp_path.iterdir()))

    if signum == signal.SIGUSR1:
        run_cell(cell, between_iterations=signal_at_the_third)
        assert saved[2] == [] and len(saved[3]) == 1  # saved after the iteration it arrived in, trained on
        return
    with pytest.raises(checkpoint.Stopped):
        run_cell(cell, between_iterations=signal_at_the_third)
    assert len(list(tmp_path.iterdir())) == 1
    resumed, _ = _run(cell)
    assert resumed.execution["resumed_from"] == "3" and resumed.test_scores == whole.test_scores


def test_a_damaged_checkpoint_is_set_aside_and_the_cell_starts_afresh(tmp_path, monkeypatch):
    monkeypatch.setenv("METABENCH_CHECKPOINTS", str(tmp_path))
    cell = _cell("maml", checkpoint_every=0)
    whole, _ = _run(cell)
    with pytest.raises(Stopped):
        _run(cell, 4)
    (path,) = tmp_path.iterdir()
    path.write_bytes(path.read_bytes()[:100])  # a write cut short (a full disk): never the atomic rename's result
    with pytest.warns(UserWarning, match="could not be resumed from .* the cell starts from meta-iteration 0"):
        again, _ = _run(cell)
    assert "resumed_from" not in again.execution and again.test_scores == whole.test_scores
    assert [p.name for p in tmp_path.iterdir()] == [f"{path.name}.unreadable-" + p.name.rsplit("-", 1)[1]
                                                    for p in tmp_path.iterdir()]


def test_checkpoint_frequency_is_in_no_configuration_hash_and_must_not_be_negative():
    assert _cell("maml", checkpoint_every=0).config_hash == _cell("maml").config_hash
    with pytest.raises(Exception, match="training.checkpoint_every must be 0 or more seconds, got -1"):
        _cell("maml", checkpoint_every=-1)


def test_a_learner_that_draws_random_numbers_resumes_with_the_same_draws(tmp_path, monkeypatch):
    """Dropout, noise, a random augmentation: a step that draws from torch, numpy or Python's generator draws the
    same numbers after a resume (the generators' states are in the checkpoint)."""
    import random  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from meta_bench.algorithms.functional import FunctionalLearner  # noqa: PLC0415

    original = FunctionalLearner.meta_gradient

    def noisy(self, batch):
        result = original(self, batch)
        noise = float(torch.rand(())) + float(np.random.rand()) + random.random()
        for parameter in self.meta_parameters():
            parameter.grad.add_(noise * 1e-3)
        return result

    monkeypatch.setattr(FunctionalLearner, "meta_gradient", noisy)
    monkeypatch.setenv("METABENCH_CHECKPOINTS", str(tmp_path))
    cell = _cell("maml", checkpoint_every=0)

    def seed(value):  # the global generators as a cell finds them (the harness seeds none but torch's, per cell)
        torch.manual_seed(value), np.random.seed(value), random.seed(value)

    seed(0)
    whole, _ = _run(cell)
    seed(0)
    with pytest.raises(Stopped):
        _run(cell, 5)
    seed(1)  # what the resumed process happens to hold: the checkpoint's states replace it
    resumed, _ = _run(cell)
    assert all(torch.equal(value, resumed.state_dict[name]) for name, value in whole.state_dict.items())


BLOCK_AFTER_CHECKPOINT = '''
import os, sys, time
from pathlib import Path
from meta_bench.algorithms.functional import FunctionalLearner
original = FunctionalLearner.meta_gradient
folder = Path(os.environ["METABENCH_CHECKPOINTS"])

def meta_gradient(self, batch):
    if any(folder.glob("*.pt")):  # a checkpoint is on disk: hold here, mid-cell, until killed
        (folder.parent / "blocked").touch()
        while True:
            time.sleep(1)
    return original(self, batch)

FunctionalLearner.meta_gradient = meta_gradient
from bench.__main__ import main
sys.exit(main(sys.argv[1:]))
'''


def test_kill_minus_nine_mid_cell_then_rerun_resumes_from_the_checkpoint_with_the_same_scores(tmp_path):
    """A real ``bench run`` killed with SIGKILL inside a cell (held there once its first checkpoint is on disk: an
    event, not a duration), then run again: the killed run is closed as interrupted, the cell resumes from the
    checkpoint (its run says from which meta-iteration) and scores exactly what an uninterrupted run scores."""
    raw = {**TINY, "dataset": {"name": "sinusoid"}, "learners": [{"name": "maml", "config": {"inner_lr": 0.01}}],
           "grid": {**TINY["grid"], "n_way": [1], "k_shot": [5]},
           "training": {**TINY["training"], "meta_iterations": 12, "validate_every": 4, "dtype": "float64",
                        "checkpoint_every": 0},
           "evaluation": {"test_episodes": 8, "query": 10}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))

    def command(store, *prefix):
        return [sys.executable, *prefix, "run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / store}",
                "--no-progress", "--no-report"]

    def environment(name):
        (tmp_path / name).mkdir()
        return {**os.environ, "OMP_NUM_THREADS": "1", "METABENCH_CHECKPOINTS": str(tmp_path / name / "checkpoints"),
                "METABENCH_AUTOTUNE": str(tmp_path / "autotune.json")}

    baseline = subprocess.run(command("whole.db", "-m", "bench"), cwd=ROOT, env=environment("whole"),
                              capture_output=True, text=True, timeout=300)
    assert baseline.returncode == 0, baseline.stderr
    killed_env = environment("killed")
    process = subprocess.Popen(command("killed.db", "-c", BLOCK_AFTER_CHECKPOINT), cwd=ROOT, env=killed_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "killed" / "blocked").exists():
            assert process.poll() is None and time.monotonic() < deadline, "the cell never reached its checkpoint"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    again = subprocess.run(command("killed.db", "-m", "bench"), cwd=ROOT, env=killed_env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "marked 2 run(s) left RUNNING" in again.stdout  # the killed cell's and its suite run
    runs = cell_runs(f"sqlite:///{tmp_path / 'killed.db'}")
    assert sorted((r.info.status, r.data.tags.get("outcome")) for r in runs) == [("FAILED", "interrupted"),
                                                                                 ("FINISHED", "finished")]
    (resumed,) = [r for r in runs if r.info.status == "FINISHED"]
    (whole,) = cell_runs(f"sqlite:///{tmp_path / 'whole.db'}")
    assert int(resumed.data.tags["ran.resumed_from"]) >= 1 and "ran.resumed_from" not in whole.data.tags
    assert resumed.data.metrics["test_mse"] == whole.data.metrics["test_mse"]
    assert resumed.data.metrics["final_val_score"] == whole.data.metrics["final_val_score"]
    assert not any((tmp_path / "killed" / "checkpoints").glob("*.pt"))  # removed once the cell was done
