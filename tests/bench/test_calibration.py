"""The report's verdicts on simulated experiments with known truth (bench.consumers.calibration), through the report's
own path: a few regimes with small Monte-Carlo sizes whose bounds still fail a broken verdict (the effects of N and
K tested on per-seed means alone were called in 40% of null experiments here). The full table:
`python -m benchmarks.calibration` (docs/measurements/calibration.md)."""
import math

from mlflow.tracking import MlflowClient

from bench.consumers.calibration import ALPHA, Regime, calibrate, replicate, rows, suite_of
from bench.consumers.report import analyse
from bench.consumers.report.loading import assemble, load_runs
from bench.run.test_time import SCORES_FILE
from bench.store import tracking


def within(outcome) -> dict[str, dict]:
    table = {row["verdict kind"]: row for row in rows(outcome)}
    assert all(row["within bound"] for row in table.values()), table
    return table


def test_effects_of_n_and_k_keep_their_false_verdict_rate_and_coverage():
    """Finding 1: each K level's test episodes are one draw shared by every seed; the test must carry it."""
    outcome = calibrate(Regime("k_axis", 3, 0.002, 0.15, episodes=600), 120)
    table = within(outcome)
    assert table["effect of N or K"]["tests"] == 120
    assert table["effect of N or K"]["coverage"] >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / 120)


def test_comparisons_by_test_condition_and_the_whole_report_keep_alpha():
    outcome = calibrate(Regime("conditions", 3, 0.05, 0.15, episodes=60), 60)
    table = within(outcome)
    assert {"learners", "learners by test condition", "whole report (Holm, family-wise)",
            "ablation simple effect", "effect of N or K", "results interval"} <= set(table)


def test_the_equivalence_rule_says_reproduced_at_the_margin_at_most_alpha_of_the_time():
    outcome = calibrate(Regime("published", 3, 0.05, 0.3, episodes=600), 100, margin_case=True)
    table = within(outcome)
    assert table["published: reproduced at the margin"]["tests"] == 300
    equal = within(calibrate(Regime("published", 3, 0.05, 0.3, episodes=600), 40))
    assert equal["published: not reproduced when equal"]["false-verdict rate"] <= ALPHA + 3 * math.sqrt(
        ALPHA * (1 - ALPHA) / 40)


def _one(regime: Regime, number: int = 0):
    suites = suite_of(regime)
    stored, _ = replicate(regime, suites, number, {})
    return analyse(assemble(stored, suites), suites)


def test_the_primary_condition_is_tested_once_not_again_by_test_condition():
    """Finding 2: the first test K after the most steps is the report's own view; testing it again in the
    test-condition view put the same p-value twice in the Holm family."""
    analysis = _one(Regime("conditions", 3, 0.05, 0.15, episodes=30))
    under = analysis.compared_under
    conditions = set(zip(under["test_k_shot"], under["test_steps"]))
    assert conditions == {("5", "1"), ("10", "1"), ("10", "5")}  # not ("5", "5")
    tests = len(analysis.compared) + len(under) + int(analysis.effects["p_holm"].notna().sum())
    assert f"Holm family: {tests} tests" in analysis.family


def test_exclude_diverged_pairs_the_episodes_both_sides_kept_and_says_how_many_were_left_out():
    """Finding 3: runs of a pair with other diverged episodes left out made an inhomogeneous table (a crash)."""
    regime = Regime("learners", 3, 0.05, 0.15, episodes=200, diverging=0.02, exclude_diverged=True)
    analysis = _one(regime)
    (row,) = analysis.frames["comparisons"].to_dict("records")
    kept, left_out = row["episodes"].split(" (")
    assert int(kept) < 200 and "left out" in left_out
    assert row["verdict"] in ("no evidence of a difference", "maml better", "pretrained better")
    assert analysis.frames["results"]["diverged episodes"].str.endswith("(left out)").all()


def test_diverged_episodes_in_a_plain_suite_leave_no_verdict_when_kept():
    """Finding 4: a finite but absurd episode entered means and comparisons without a word."""
    analysis = _one(Regime("learners", 3, 0.05, 0.15, episodes=200, diverging=0.02))
    (row,) = analysis.frames["comparisons"].to_dict("records")
    assert row["verdict"].startswith("no verdict:") and "diverged episode score(s)" in row["verdict"]
    assert analysis.frames["results"]["diverged episodes"].str.endswith("(kept)").all()
    assert "0 tests" in analysis.family


def test_the_in_memory_replicate_reads_back_the_same_through_mlflow(tmp_path):
    """What the calibration builds in memory is what the store holds: logged to a real MLflow store and read back by
    the report's loader, the same verdicts and intervals come out."""
    regime = Regime("conditions", 2, 0.05, 0.15, episodes=12)
    suites = suite_of(regime)
    stored, _ = replicate(regime, suites, 3, {})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = tracking.experiment_id(client, suites[0].suite)
    ids = {}
    for run in stored.runs:
        made = client.create_run(experiment, tags=run.data.tags)
        ids[made.info.run_id] = run.info.run_id
        for name, value in run.data.metrics.items():
            client.log_metric(made.info.run_id, name, value)
        for name, frame in (("test_episodes.csv", stored.episodes[run.info.run_id]),
                            (SCORES_FILE, stored.conditions[run.info.run_id])):
            path = tmp_path / made.info.run_id / name
            path.parent.mkdir(exist_ok=True)
            frame.to_csv(path, index=False)
            client.log_artifact(made.info.run_id, str(path))
        client.set_terminated(made.info.run_id)
    loaded = analyse(load_runs(client, suites), suites)
    memory = analyse(assemble(stored, suites), suites)
    for name in ("results", "comparisons", "comparisons_by_test_condition", "ablations", "test_conditions"):
        assert loaded.frames[name].equals(memory.frames[name]), name
    assert loaded.family == memory.family
