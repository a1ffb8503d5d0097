import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.core.config import ConfigError
from bench.spec.suite import expand, load_suites, parse_suite
from tests.suites import TINY

ROOT = Path(__file__).resolve().parents[2]


def bad(changes, match):
    raw = {**TINY, **changes}
    with pytest.raises(ConfigError, match=match):
        parse_suite(raw, "s.yaml")


def test_unknown_keys_are_named_with_a_suggestion():
    bad({"trainig": {}}, r"s.yaml: unknown key 'trainig' \(did you mean 'training'\?\); known keys: suite, dataset")
    bad({"training": {"meta_iteration": 3}}, r"training: unknown key 'meta_iteration' \(did you mean 'meta_iterations'")


def test_wrong_types_and_ranges_are_named():
    bad({"training": {"meta_iterations": "many"}}, r"training.meta_iterations: expected an integer, got 'many'")
    bad({"training": {"lr": -1}}, r"training.lr must be positive, got -1")
    bad({"training": {"optimizer": "adagrad"}}, r"training.optimizer: 'adagrad' is not allowed; choose one of 'adam', 'sgd'")
    bad({"grid": {"n_way": [0]}}, r"grid.n_way: 0 is not allowed; values must be positive")
    bad({"evaluation": {"test_episodes": 0}}, r"evaluation.test_episodes and evaluation.query must be positive")


def test_unknown_names_list_the_known_ones():
    bad({"learners": ["mamll"]}, r"learners\[0\].name: unknown learner 'mamll' \(did you mean 'maml'\?\); known: anil, finetune")
    bad({"dataset": {"name": "omniglott"}}, r"dataset.name: unknown dataset 'omniglott' \(did you mean 'omniglot'")
    bad({"grid": {"devices": ["gpu"]}}, r"grid.devices: unknown device 'gpu'; known: cpu, cuda, cuda:N, mps")
    bad({"learners": [{"name": "maml", "config": {"inner_rate": 0.1}}]},
        r"learners\[0\].config \(maml\): unknown key 'inner_rate'.*known keys: inner_lr")
    bad({"grid": {**TINY["grid"], "options": {"head_step": [1]}}}, r"no learner of this suite has the option 'head_step'")


def test_an_ablation_baseline_names_a_swept_axis_and_one_of_its_values():
    grid = {**TINY["grid"], "k_shot": [1, 2], "options": {"inner_steps": [1, 3]}}
    bad({"grid": grid, "report": {"baselines": {"inner_stepz": 3}}},
        r"report.baselines: 'inner_stepz' is not an axis the suite sweeps .*swept: k_shot, inner_steps")
    bad({"grid": grid, "report": {"baselines": {"n_way": 3}}}, r"report.baselines: 'n_way' is not an axis")
    bad({"grid": grid, "report": {"baselines": {"inner_steps": 2}}},
        r"report.baselines.inner_steps: 2 is not one of its values \(1, 3\)")
    parse_suite({**TINY, "grid": grid, "report": {"baselines": {"inner_steps": 3, "k_shot": 2}}}, "s.yaml")


def test_a_dataset_states_learner_defaults_that_the_suite_overrides():
    """Sinusoid regression takes Finn et al.'s inner rate 0.01 unless the suite says otherwise; image datasets keep the
    learners' own default (0.4)."""
    sinusoid = {**TINY, "dataset": {"name": "sinusoid"}, "grid": {**TINY["grid"], "n_way": [1], "k_shot": [5]}}

    def inner_lrs(raw):
        return [getattr(c.learner_config, "inner_lr", None) for c in parse_suite(raw, "s.yaml").cells]

    assert inner_lrs({**sinusoid, "learners": ["fomaml/functional", "maml"]}) == [0.01, 0.01]
    assert inner_lrs({**sinusoid, "learners": [{"name": "maml", "config": {"inner_lr": 0.2}}]}) == [0.2]
    assert inner_lrs({**sinusoid, "learners": ["maml"], "grid": {**sinusoid["grid"], "options": {
        "inner_lr": [0.1, 0.3]}}}) == [0.1, 0.3]
    assert inner_lrs({**TINY, "learners": ["maml"]}) == [0.4]


def test_impossible_episodes_for_the_data_are_refused():
    bad({"grid": {**TINY["grid"], "n_way": [5000]}}, r"n_way=5000 is larger than the \d+ classes of split 'train'")
    bad({"evaluation": {"query": 30}}, r"k_shot \+ q_query = 1 \+ 30 = 31 is larger than the 20 examples")


def test_grid_expands_learner_options_and_skips_options_a_learner_lacks():
    suite = parse_suite({**TINY, "grid": {**TINY["grid"], "seeds": [0, 1],
                                          "options": {"inner_steps": [1, 2], "head_epochs": [5, 10]}}})
    cells = expand(suite)
    by_learner = {}
    for cell in cells:
        by_learner.setdefault(cell.learner, []).append(cell)
    assert len(by_learner["maml"]) == 4 and len(by_learner["finetune"]) == 4  # 2 S x 2 seeds; 2 head_epochs x 2 seeds
    assert {c.learner_config.inner_steps for c in by_learner["maml"]} == {1, 2}
    assert {c.learner_config.head_epochs for c in by_learner["finetune"]} == {5, 10}
    assert len({c.config_hash for c in cells}) == len(cells)
    # every swept option is an axis of every cell, the same way as n_way; "-" where the learner lacks it
    maml = next(c for c in by_learner["maml"] if c.learner_config.inner_steps == 2 and c.seed == 1)
    assert maml.axes == {"n_way": "3", "k_shot": "1", "device": "cpu", "seed": "1", "inner_steps": "2",
                         "head_epochs": "-"}
    assert "inner_steps=2" in maml.title and "head_epochs" not in maml.title


def test_the_evaluation_fingerprint_changes_exactly_when_the_test_episodes_do():
    def fingerprint(**changes):
        raw = {**TINY, **changes}
        return {c.learner: c.evaluation_fingerprint for c in expand(parse_suite(raw))}

    base = fingerprint()
    assert len(set(base.values())) == 1  # every learner of a cell is scored on the same episodes
    assert fingerprint(training={**TINY["training"], "lr": 0.5}) == base  # training does not change the episodes
    assert fingerprint(grid={**TINY["grid"], "seeds": [4]}) == base
    for changed in ({"evaluation": {**TINY["evaluation"], "query": 3}},
                    {"evaluation": {**TINY["evaluation"], "episode_seed": 1}},
                    {"evaluation": {**TINY["evaluation"], "test_episodes": 7}},
                    {"grid": {**TINY["grid"], "k_shot": [2]}}):
        assert fingerprint(**changed)["maml"] != base["maml"], changed
    cell = expand(parse_suite(TINY))[0]
    other_data = dataclasses.replace(cell, dataset_options=dataclasses.replace(cell.dataset_options, seed=1))
    assert other_data.evaluation_fingerprint != cell.evaluation_fingerprint


def test_evaluation_inner_steps_override_the_test_time_steps():
    suite = parse_suite({**TINY, "evaluation": {**TINY["evaluation"], "inner_steps": 7}})
    assert {c.learner_config.eval_inner_steps for c in expand(suite) if c.learner != "finetune"} == {7}


def test_bad_suite_exits_2_with_one_paragraph_and_creates_no_run(write_suite, tmp_path):
    path = write_suite({"trainig": {}})
    db = tmp_path / "mlflow.db"
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--tracking-uri", f"sqlite:///{db}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "unknown key 'trainig'" in done.stderr
    assert str(path) in done.stderr
    assert not db.exists()


def test_dry_run_prints_the_grid(write_suite, capsys):
    assert main(["run", str(write_suite()), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "suite tiny: 3 cell(s)" in out and "maml 3-way 1-shot cpu seed=0" in out


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "suites").glob("*.yaml")))
def test_shipped_suites_validate(name, capsys):
    assert main(["run", str(ROOT / "suites" / name), "--dry-run"]) == 0
    assert "cell(s)" in capsys.readouterr().out


def test_a_suite_file_that_is_not_utf8_exits_2_without_a_traceback(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("suite: caf\u00e9\n".encode("latin-1"))
    done = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not UTF-8 text (byte 10 is 0xe9)" in done.stderr and str(path) in done.stderr


@pytest.mark.parametrize("name", [".", "..", "...", "a/b", ""])
def test_suite_names_that_would_leave_reports_are_refused(name):
    bad({"suite": name}, "suite: .* is not allowed")


def test_missing_suite_file():
    with pytest.raises(ConfigError, match="no such suite file"):
        load_suites("does/not/exist.yaml")
