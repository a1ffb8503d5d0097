"""The regression gate: its comparisons name the learner and the figure, and the deterministic memory figures hold
against the baseline in the repository."""
import inspect
import json

import pytest
import torch

from bench.consumers import gate
from meta_bench.algorithms import LEARNERS

BASELINE = json.loads(gate.BASELINE.read_text())
SAME_TORCH = pytest.mark.skipif(BASELINE["torch"] != torch.__version__,
                                reason=f"baseline made with torch {BASELINE['torch']}: refresh it")


def figures(section=None, name=None, value=None):
    """The baseline's own figures, with one value changed."""
    measured = json.loads(json.dumps(BASELINE))
    if section:
        measured[section][name] = value
    return measured


def test_unchanged_figures_pass_and_each_regression_names_learner_and_figure():
    assert gate.compare(BASELINE, figures()) == []
    (line,) = gate.compare(BASELINE, figures("scores", "fomaml/deepcopy", 0.1))
    assert line.startswith("fomaml/deepcopy: test accuracy 0.100000 on the pinned float64 suite")
    (line,) = gate.compare(BASELINE, figures("saved_bytes", "maml", 1))
    assert line.startswith("maml: saved-for-backward bytes 1, baseline")
    slow = 2 * BASELINE["speed_ratio"]["finetune"]
    (line,) = gate.compare(BASELINE, figures("speed_ratio", "finetune", slow))
    assert line.startswith("finetune: meta-iteration takes") and "+100%" in line
    assert gate.compare(BASELINE, figures("speed_ratio", "finetune", 1.2 * BASELINE["speed_ratio"]["finetune"])) == []


def test_another_torch_asks_for_a_refresh_instead_of_failing_obscurely():
    (line,) = gate.compare({**BASELINE, "torch": "1.0"}, figures())
    assert line.startswith("baseline from another torch (1.0, this is") and "--update-baseline" in line


def test_every_registered_learner_is_in_the_baseline():
    assert set(BASELINE["scores"]) == set(BASELINE["saved_bytes"]) == set(LEARNERS.names())


def test_a_learner_added_since_the_baseline_is_noted_not_failed_and_a_gone_one_fails():
    added = figures()
    added["scores"]["my_learner"], added["saved_bytes"]["my_learner"] = 0.5, 1234
    assert gate.compare(BASELINE, added) == [] and gate.unpinned(BASELINE, added) == ["my_learner"]
    gone = figures()
    del gone["scores"]["maml"], gone["saved_bytes"]["maml"]
    assert gate.compare(BASELINE, gone) == ["maml: test accuracy not measured (a pinned learner is gone)"]
    assert gate.same_torch(BASELINE, figures()) and not gate.same_torch({**BASELINE, "torch": "1.0"}, figures())


@SAME_TORCH
def test_saved_bytes_equal_the_stored_values():
    assert gate.saved_bytes() == BASELINE["saved_bytes"]


@pytest.fixture()
def one_thread():
    """Byte counts do not depend on threads; 20 meta-iterations of 11 tiny (8-filter) learners run faster on one,
    and far faster than two threads on a 2-core machine that is running anything else."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_memory_stays_flat_over_20_meta_iterations_and_a_leak_is_caught(monkeypatch, one_thread):
    # one learner per implementation (the presets share one class); `make ci-check`, which CI runs, checks them all
    one_each = {}
    for name in sorted(LEARNERS.names(), key=lambda name: name != "maml"):  # maml: the presets' defaults
        one_each.setdefault(inspect.getmodule(LEARNERS[name]).__name__, name)
    assert len(one_each) == 6 and "maml" in one_each.values()
    assert gate.flatness_failures(sorted(one_each.values())) == []
    from meta_bench.algorithms.functional import FunctionalLearner

    kept = []
    real = FunctionalLearner.meta_gradient

    def leaky(self, batch):  # the classic: a history of losses that keeps every step's tensors alive
        result = real(self, batch)
        kept.append(torch.zeros(1000) + result.loss)
        return result

    monkeypatch.setattr(FunctionalLearner, "meta_gradient", leaky)
    (line,) = gate.flatness_failures(["fomaml/functional"])
    assert line.startswith("fomaml/functional: live tensor memory grew from")
