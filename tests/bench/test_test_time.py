"""One trained model scored under every test condition: the same scores as separate evaluations; divergence seen."""
import dataclasses
import math

import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from bench.__main__ import main
from bench.core import metrics as m
from bench.run import test_time
from bench.run import training
from bench.run.evaluation import evaluate
from bench.run.factory import build_learner
from bench.run.training import run_cell
from bench.spec.suite import expand, parse_suite
from meta_bench.datasets import load_dataset
from tests.suites import TINY, cell_runs

SINUSOID = {**TINY, "dataset": {"name": "sinusoid"}, "grid": {**TINY["grid"], "n_way": [1], "k_shot": [4]},
            "training": {**TINY["training"], "dtype": "float64", "meta_batch_size": 3},
            "evaluation": {"test_episodes": 7, "query": 5, "k_shot": [2, 6], "inner_steps": [1, 2, 4]}}


@pytest.mark.parametrize("learner", [{"name": "maml", "config": {"inner_lr": 0.01}},
                                     {"name": "finetune", "config": {"finetune_backbone": True, "head_momentum": 0.0,
                                                                     "head_dampening": 0.0}}])
def test_two_test_k_and_three_step_counts_score_as_six_separate_evaluations(learner):
    (cell,) = expand(parse_suite({**SINUSOID, "learners": [learner]}))
    result = run_cell(cell)
    option = type(build_learner(cell)).test_steps_option
    data = load_dataset("sinusoid")
    rows = {(k, s, e): score for k, s, e, score, _ in result.condition_scores}
    assert {s for _, s, _ in rows} == {0, 1, 2, 3, 4}  # the whole curve, one adaptation
    for k in (2, 6):
        source = data.sampler("test", 1, k, 5, cell.evaluation.episode_seed)
        for steps in (1, 2, 4):
            alone = build_learner(dataclasses.replace(
                cell, learner_config=dataclasses.replace(cell.learner_config, **{option: steps})))
            alone.model.load_state_dict(result.state_dict)
            separate = evaluate(alone, source, 7, torch.device("cpu"), torch.float64)
            assert [rows[(k, steps, e)] for e in range(7)] == pytest.approx(separate, rel=1e-9, abs=1e-12)
            assert result.metrics[m.under("test_mse", k, steps)] == pytest.approx(sum(separate) / 7, rel=1e-9)
    assert result.metrics["test_mse"] == result.metrics[m.under("test_mse", 2, 4)]  # the primary: first K, most steps
    assert result.test_scores == [rows[(2, 4, e)] for e in range(7)]


def test_diverged_scores_are_the_non_finite_and_the_absurd():
    assert test_time.diverged([1.0, 2.0, 1.5, 2500.0, math.inf, math.nan], True, 1000, 2.0) == [
        False, False, False, True, True, True]
    assert test_time.diverged([0.2, 0.9, math.nan], False, 1000, None) == [False, False, True]  # accuracy
    # per episode: each against its own error before adaptation
    assert test_time.diverged([5.0, 5.0], True, 10, [1.0, 0.1]) == [False, True]


def test_the_divergence_bound_does_not_move_with_the_failure():
    """Half the episodes blown up: a bound relative to the median blew up with them and flagged none; an error of
    0 on most episodes made it 0 and switched the rule off. The dataset's stated scale holds in both."""
    half = [0.5, 0.4, 0.6, 1e9, 2e9, 3e9]
    assert test_time.diverged(half, True, 1000, 4.25) == [False] * 3 + [True] * 3
    mostly_zero = [0.0, 0.0, 0.0, 1e7]
    assert test_time.diverged(mostly_zero, True, 1000, 4.25) == [False, False, False, True]
    sinusoid = load_dataset("sinusoid")
    assert test_time.divergence_scale(sinusoid, {0: [9.0], 1: [1.0]}) == pytest.approx(sinusoid.zero_prediction_mse())


def test_a_plain_suite_records_every_episodes_divergence():
    """No test conditions named: the flags are recorded all the same (the report reads them for every cell)."""
    (cell,) = expand(parse_suite({**SINUSOID, "learners": [{"name": "maml", "config": {"inner_lr": 0.01}}],
                                  "evaluation": {"test_episodes": 7, "query": 5}}))
    result = run_cell(cell)
    assert len(result.condition_scores) == 7
    assert [score for *_, score, _ in result.condition_scores] == result.test_scores
    assert {flag for *_, flag in result.condition_scores} == {False}


@pytest.mark.parametrize("exclude", [False, True])
def test_a_diverging_episode_is_counted_and_left_out_of_the_mean_only_when_the_suite_says(exclude, monkeypatch):
    suite = parse_suite({**SINUSOID, "learners": [{"name": "maml", "config": {"inner_lr": 0.01}}],
                         "evaluation": {**SINUSOID["evaluation"], "exclude_diverged": exclude}})
    (cell,) = expand(suite)
    real = test_time.evaluate_curve

    def one_explodes(*args, **kwargs):
        curve = real(*args, **kwargs)
        curve[-1][3] = 1e12  # episode 3, after the last step
        return curve

    monkeypatch.setattr(test_time, "evaluate_curve", one_explodes)
    result = run_cell(cell)
    flagged = [(k, s, e) for k, s, e, _, flag in result.condition_scores if flag]
    assert flagged == [(2, 4, 3), (6, 4, 3)]
    assert result.metrics[m.TEST_DIVERGED] == 1 and result.metrics[m.under(m.TEST_DIVERGED, 6, 1)] == 0
    mean = result.metrics["test_mse"]
    others = [s for e, s in enumerate(result.test_scores) if e != 3]
    if exclude:
        assert mean == pytest.approx(sum(others) / 6)
    else:
        assert mean == pytest.approx((sum(others) + 1e12) / 7)


def test_the_report_shows_every_test_condition_the_curves_and_the_published_rows(tmp_path):
    raw = {**SINUSOID, "suite": "finn_tiny", "learners": [{"name": "maml", "config": {"inner_lr": 0.01}},
                                                          {"name": "finetune", "label": "pretrained",
                                                           "config": {"finetune_backbone": True}}],
           "grid": {**SINUSOID["grid"], "k_shot": [10], "seeds": [0, 1]},  # the series' training K
           "report": {"output_dir": str(tmp_path / "reports"), "min_seeds": 2,
                      "published": {"maml": "finn2017.sinusoid.maml"}}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--no-progress"]) == 0
    folder = tmp_path / "reports" / "finn_tiny"
    table = pd.read_csv(folder / "test_conditions.csv")
    assert len(table) == 2 * 2 * 3 and set(table["seeds"]) == {2}  # learners x test K x steps, seeds pooled
    assert set(zip(table["test K"], table["test steps"])) == {(k, s) for k in (2, 6) for s in (1, 2, 4)}
    assert (folder / "adaptation_curves.png").exists()
    compared = pd.read_csv(folder / "comparisons_by_test_condition.csv")  # pairs only under one test condition
    assert sorted(zip(compared["test_k_shot"], compared["test_steps"])) == sorted(  # the primary is compared once
        (k, s) for k in (2, 6) for s in (1, 2, 4) if (k, s) != (2, 4))
    assert set(compared["seeds"]) == {2} and set(compared["episodes"]) == {7}
    rows = pd.read_csv(folder / "published_test_conditions.csv")
    assert list(rows["test steps"]) == [1, 5, 10] and set(rows["learner"]) == {"maml"}
    assert rows["verdict"].str.contains("test K 5 after 1 steps was not measured").iloc[0]
    assert set(rows["margin"]) == {"±0.134", "±0.076", "±0.07"}  # 20% of each published error, declared
    text = (folder / "report.md").read_text()
    assert "## Test conditions" in text and "0 diverged episode(s)" in text
    # the test-time axes are ablations too: more steps against the first listed at each test K (the same episodes),
    # a larger test K against the first at each step count (other episodes: per-seed means)
    effects = pd.read_csv(folder / "ablations.csv", dtype=str)
    for learner in ("maml", "pretrained"):
        mine = effects[effects["learner"] == learner]
        assert sorted(zip(mine["component"], mine["levels"], mine["at"], mine["episodes"])) == sorted(
            [("test_steps", f"1 → {s}", f"test_k_shot={k}", "7") for s in (2, 4) for k in (2, 6)]
            + [("test_k_shot", "2 → 6", f"test_steps={s}", "7") for s in (1, 2, 4)])


def test_a_test_condition_added_later_tests_the_finished_runs_without_training_them(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    base = {**SINUSOID, "learners": [{"name": "maml", "config": {"inner_lr": 0.01}}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**base, "evaluation": {**base["evaluation"], "k_shot": [2],
                                                           "inner_steps": [1, 2]}}))
    assert main(["run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]) == 0
    (first,) = cell_runs(uri)
    iterations = []
    real = training.CurveWindow.add
    monkeypatch.setattr(training.CurveWindow, "add", lambda self, *a: iterations.append(a[0]) or real(self, *a))
    path.write_text(yaml.safe_dump(base))  # test K 6 and 4 steps added
    assert main(["run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]) == 0
    assert iterations == []  # not one meta-iteration
    (second,) = [r for r in cell_runs(uri) if r.info.run_id != first.info.run_id]
    assert second.data.tags["trained_by"] == first.info.run_id
    assert second.data.tags["training_hash"] == first.data.tags["training_hash"]
    assert second.data.tags["config_hash"] != first.data.tags["config_hash"]
    assert second.data.metrics["train_seconds_total"] == first.data.metrics["train_seconds_total"]
    before, after = scores_of(uri, first), scores_of(uri, second)
    assert set(after) - set(before) and all(after[key] == pytest.approx(before[key], rel=1e-12) for key in before)
    assert main(["run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]) == 0
    assert len(cell_runs(uri)) == 2  # the tested run is reused as any finished run
    assert main(["run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report", "--force"]) == 0
    assert iterations  # --force trains again


def test_after_force_a_test_condition_added_later_is_tested_on_the_forced_training(tmp_path):
    """The training a new test condition stands on is the run that stands for that training (as the report shows
    it): after --force, the forced run, not the first."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    base = {**SINUSOID, "learners": [{"name": "maml", "config": {"inner_lr": 0.01}}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**base, "evaluation": {**base["evaluation"], "k_shot": [2], "inner_steps": [1]}}))
    args = ["run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]
    assert main(args) == 0
    (first,) = cell_runs(uri)
    assert main(args + ["--force"]) == 0
    (forced,) = [r for r in cell_runs(uri) if r.info.run_id != first.info.run_id]
    path.write_text(yaml.safe_dump(base))  # test K 6 and 2 and 4 steps added
    assert main(args) == 0
    (tested,) = [r for r in cell_runs(uri) if r.info.run_id not in (first.info.run_id, forced.info.run_id)]
    assert tested.data.tags["trained_by"] == forced.info.run_id


def test_a_run_tested_on_another_training_records_and_shows_where_that_training_came_from(tmp_path, monkeypatch):
    """Its own code identity, commit and environment are its tester's; the trainer's are recorded beside them, and
    the report shows the trainer and warns of the mixed code and environments."""
    from bench.run import execution, runner

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    base = {**SINUSOID, "learners": [{"name": "maml", "config": {"inner_lr": 0.01}}],
            "report": {"output_dir": str(tmp_path / "reports")}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**base, "evaluation": {**base["evaluation"], "k_shot": [2], "inner_steps": [1]}}))
    assert main(["run", str(path), "--tracking-uri", uri, "--no-progress", "--no-report"]) == 0
    (donor,) = cell_runs(uri)
    # since then maml's code was edited and the machine changed; its finished training is reused all the same
    real = execution.code_identity
    monkeypatch.setattr(execution, "code_identity",
                        lambda learner, v: "edited" if learner == "maml" else real(learner, v))
    monkeypatch.setattr(runner.InProcess, "environment_key", lambda self, cell: "elsewhere")
    path.write_text(yaml.safe_dump(base))  # a test condition added
    assert main(["run", str(path), "--tracking-uri", uri, "--no-progress", "--reuse-other-code"]) == 0
    (tested,) = [r for r in cell_runs(uri) if r.info.run_id != donor.info.run_id]
    tags, trainer = tested.data.tags, donor.data.tags
    assert (tags["code_identity"], tags["environment"]) == ("edited", "elsewhere")
    assert {name: tags[name] for name in ("trained_by", "trained_code_identity", "trained_git_commit",
                                          "trained_environment")} == {
        "trained_by": donor.info.run_id, "trained_code_identity": trainer["code_identity"],
        "trained_git_commit": trainer["git_commit"], "trained_environment": trainer["environment"]}
    folder = tmp_path / "reports" / "tiny"
    assert list(pd.read_csv(folder / "runs.csv")["trained by"]) == [donor.info.run_id]
    text = (folder / "report.md").read_text()
    assert "more than one code version (--reuse-other-code) for: maml" in text
    assert f"trained by code {trainer['code_identity']}" in text
    assert f"trained in {trainer['environment']}" in text


def scores_of(uri, run):
    folder = MlflowClient(uri).download_artifacts(run.info.run_id, test_time.SCORES_FILE)
    rows = pd.read_csv(folder, dtype={"test_steps": str})
    return {(r.test_k_shot, r.test_steps, r.episode): r.score for r in rows.itertuples()}


def test_a_comparison_over_diverged_scores_gets_no_verdict(tmp_path, monkeypatch, capsys):
    real = test_time.evaluate_curve

    def one_explodes(*args, **kwargs):
        curve = real(*args, **kwargs)
        curve[-1][3] = math.nan  # episode 3, after the last step, for every learner and seed
        return curve

    monkeypatch.setattr(test_time, "evaluate_curve", one_explodes)
    raw = {**SINUSOID, "suite": "diverging", "learners": [{"name": "maml", "config": {"inner_lr": 0.01}},
                                                          {"name": "anil", "config": {"inner_lr": 0.01}}],
           "grid": {**SINUSOID["grid"], "seeds": [0, 1]},
           "evaluation": {**SINUSOID["evaluation"], "k_shot": [2]},
           "report": {"output_dir": str(tmp_path / "reports"), "min_seeds": 2}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--no-progress"]) == 0
    summary = capsys.readouterr().out
    assert summary.count("DIVERGED: 1 test episode(s)") == 4  # every cell's row in the run's summary says so
    compared = pd.read_csv(tmp_path / "reports" / "diverging" / "comparisons_by_test_condition.csv")
    verdicts = dict(zip(compared["test_steps"], compared["verdict"]))
    assert 4 not in verdicts and not verdicts[1].startswith("no verdict")  # the primary condition: compared once,
    (primary,) = pd.read_csv(tmp_path / "reports" / "diverging" / "comparisons.csv")["verdict"]  # in the main view
    assert primary.startswith("no verdict: 4 diverged episode score(s)")  # episode 3 of 2 seeds x 2 learners
    conditions = pd.read_csv(tmp_path / "reports" / "diverging" / "test_conditions.csv")
    assert set(conditions[conditions["test steps"] == 4]["diverged episodes"]) == {2}  # one per seed
    # a mean over a NaN episode is undefined ("-"), not the mean of the episodes left (pandas skips NaN); that one is
    # shown beside it
    last = conditions[conditions["test steps"] == 4]
    assert set(last["test MSE (mean ± 95% CI, seeds and episodes)"]) == {"-"} and "-" not in set(last["without the diverged"])


def test_a_cell_whose_test_error_explodes_is_flagged_in_the_summary_and_the_report(tmp_path, capsys):
    """MAML at inner rate 3 on sinusoids (the learners' image default is 0.4, Finn's 0.01): its test error is far
    above predicting 0 everywhere (E[A^2]/2 = 4.25 here), which no per-episode divergence rule can see when every
    episode is off. The summary row and the report's first lines say so; maml/fast at the dataset's default does not."""
    raw = {**SINUSOID, "suite": "exploding", "learners": [{"name": "maml", "config": {"inner_lr": 3.0}}, "maml/fast"],
           "report": {"output_dir": str(tmp_path / "reports")}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--no-progress"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if " finished " in line and "cpu" in line]
    assert [("EXPLODED: test MSE above 10x predicting 0 (4.25)" in row) for row in rows if "maml" in row] == [
        True, False]  # maml, then maml/fast
    concluded = (tmp_path / "reports" / "exploding" / "report.md").read_text().split("## Conclusions")[1]
    assert "- EXPLODED: maml (seed 0): test MSE" in concluded and "EXPLODED: maml/fast" not in concluded
    assert "- maml/fast scores best" in concluded
