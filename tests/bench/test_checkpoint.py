"""Cells that resume mid-training: interrupted at a meta-iteration and claimed again, a cell resumes from its last
checkpoint and ends exactly as a cell that never stopped (float64 on the CPU), curves included."""
import pytest
import torch

from bench.run import checkpoint
from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite
from tests.suites import TINY


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
