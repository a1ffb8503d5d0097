import itertools
import re

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from bench.__main__ import main
from bench.core import metrics as m
from bench.consumers.report.statistics import crossed_test, decide, holm
from bench.spec.suite import ReportOptions
from tests.suites import TINY


def run_and_report(write_suite, tracking_uri, tmp_path, changes, *extra, expect=0):
    path = write_suite({**changes, "report": {"output_dir": str(tmp_path / "reports"), **changes.get("report", {})}})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", *extra]) == expect
    return tmp_path / "reports" / "tiny"


def logged_scores(tracking_uri):
    """label, inner_lr, seed -> test accuracy, straight from MLflow."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    return {(r.data.tags["label"], r.data.tags.get("axis.inner_lr"), int(r.data.tags["axis.seed"])):
            r.data.metrics["test_accuracy"] for r in client.search_runs([experiment], "tags.role = 'cell'")}


def test_a_swept_option_keeps_its_rows_pairs_and_figures_apart(write_suite, tracking_uri, tmp_path, capsys):
    learners = ["fomaml/functional", "fomaml/deepcopy", "maml", "finetune"]
    grid = {**TINY["grid"], "seeds": [0, 1, 2], "options": {"inner_lr": [0.1, 0.4]}}
    folder = run_and_report(write_suite, tracking_uri, tmp_path, {"learners": learners, "grid": grid})
    assert f"report: {folder / 'report.md'}" in capsys.readouterr().out
    results = pd.read_csv(folder / "results.csv", dtype=str)
    assert len(results) == 7 and not results.duplicated(["learner", "inner_lr"]).any()  # 3 x 2 inner_lr + finetune
    assert set(results[results["learner"] == "finetune"]["inner_lr"]) == {"-"}
    assert (results["seeds"] == "3").all()
    between = pd.read_csv(folder / "comparisons.csv", dtype=str)
    variants = pd.read_csv(folder / "variant_comparisons.csv", dtype=str)
    # every pair of algorithms at each inner_lr (finetune has none: it pairs with each), each exactly once; the FOMAML
    # variants are represented by the first of them between algorithms, and compared among themselves
    assert len(between) == 6 and not between.duplicated(["A", "B", "inner_lr"]).any()
    assert set(between["A"]) | set(between["B"]) == {"fomaml/functional", "maml", "finetune"}
    assert set(zip(variants["A"], variants["B"], variants["inner_lr"])) == {
        ("fomaml/functional", "fomaml/deepcopy", "0.1"), ("fomaml/functional", "fomaml/deepcopy", "0.4")}
    assert (between["seeds"] == "3").all() and (between["episodes"] == "6").all()
    # the mean difference is the difference of the seed-averaged scores MLflow holds, at the same inner_lr
    scores = logged_scores(tracking_uri)
    for row in between.to_dict("records"):
        def mean(label):
            lr = "-" if label == "finetune" else row["inner_lr"]
            return np.mean([scores[(label, lr, seed)] for seed in (0, 1, 2)])
        assert abs(float(row["A - B"].removesuffix("pp")) - 100 * (mean(row["A"]) - mean(row["B"]))) < 0.006
    # within each learner that has it, the effect of inner_lr: 0.4 against the first value listed, on the same seeds
    ablations = pd.read_csv(folder / "ablations.csv", dtype=str)
    assert list(ablations["learner"]) == ["fomaml/functional", "fomaml/deepcopy", "maml"]
    assert set(zip(ablations["component"], ablations["levels"], ablations["seeds"])) == {("inner_lr", "0.1 → 0.4", "3")}
    for row in ablations.to_dict("records"):
        change = np.mean([scores[(row["learner"], "0.4", s)] - scores[(row["learner"], "0.1", s)] for s in (0, 1, 2)])
        assert abs(float(row["difference"].removesuffix("pp")) - 100 * change) < 0.006
    for name in ("score_by_learner", "test_accuracy_vs_inner_lr", "train_ms_median_vs_inner_lr",
                 "train_saved_bytes_peak_vs_inner_lr", "score_vs_time", "validation_curves"):
        png = folder / f"{name}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 + 3  # and one ablation figure per learner with inner_lr
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", page)  # opens without external requests
    markdown = (folder / "report.md").read_text()
    assert "Holm-adjusted over every comparison" in markdown and "## Failed and skipped cells" in markdown
    # one Holm family: between algorithms, between variants and the ablation effects, every printed p (Holm) counted
    printed = sum((pd.read_csv(folder / f"{name}.csv", dtype=str)["p (Holm)"] != "-").sum()
                  for name in ("comparisons", "variant_comparisons", "ablations"))
    assert int(re.search(r"Holm family: (\d+) tests", markdown).group(1)) == printed == 6 + 2 + 3
    # the first lines say which learner scores best at each inner_lr, from the same scores MLflow holds
    concluded = markdown.split("## Conclusions")[1].split("\n## ")[0]
    for lr in ("0.1", "0.4"):
        means = {label: np.mean([scores[(label, "-" if label == "finetune" else lr, s)] for s in (0, 1, 2)])
                 for label in ("fomaml/functional", "maml", "finetune")}
        best = max(means, key=means.get)
        assert f"inner_lr={lr}: {best} scores best (test accuracy {100 * means[best]:.2f}%)" in concluded
    assert "| device | inner_lr |" in markdown  # the swept option is a column like the others


def test_one_seed_gives_the_difference_and_no_verdict(write_suite, tracking_uri, tmp_path):
    folder = run_and_report(write_suite, tracking_uri, tmp_path, {"learners": ["maml", "finetune"]})
    (row,) = pd.read_csv(folder / "comparisons.csv", dtype=str, keep_default_na=False).to_dict("records")
    assert row["verdict"] == "no verdict: one training run per arm (3 seeds needed)"
    assert row["A - B"] != "-" and row["p (Holm)"] == "-"  # the difference is shown; no p-value enters the family
    results = pd.read_csv(folder / "results.csv")
    assert results["test accuracy (mean ± 95% CI, seeds and episodes)"].str.endswith("(1 seed: CI over episodes)").all()


def test_changed_evaluation_is_a_new_definition_never_paired_with_the_old(write_suite, tracking_uri, tmp_path):
    learners = {"learners": ["maml", "finetune"]}
    run_and_report(write_suite, tracking_uri, tmp_path, learners, "--no-report")
    folder = run_and_report(write_suite, tracking_uri, tmp_path,
                            {**learners, "evaluation": {**TINY["evaluation"], "query": 3}})
    runs = pd.read_csv(folder / "runs.csv")
    assert len(runs) == 2  # the current definition only
    others = pd.read_csv(folder / "other_definitions.csv")
    assert others["runs"].sum() == 2 and set(others["learner"]) == {"maml", "finetune"}
    assert len(pd.read_csv(folder / "comparisons.csv")) == 1


def test_results_of_mixed_code_are_flagged(write_suite, tracking_uri, tmp_path, monkeypatch):
    from bench.run import execution

    run_and_report(write_suite, tracking_uri, tmp_path, {"learners": ["maml"]}, "--no-report")
    real = execution.code_identity
    monkeypatch.setattr(execution, "code_identity",
                        lambda learner, v: "edited" if learner == "maml" else real(learner, v))
    folder = run_and_report(write_suite, tracking_uri, tmp_path,
                            {"learners": ["maml"], "grid": {**TINY["grid"], "seeds": [0, 1]}}, "--reuse-other-code")
    assert "WARNING: runs made by more than one code version (--reuse-other-code) for: maml" in \
        (folder / "report.md").read_text()
    assert set(pd.read_csv(folder / "runs.csv")["code identity"]) == {"edited", real("maml", "glyphs")}


def test_report_lists_failed_and_skipped_cells_and_leaves_out_ablations_not_run(write_suite, tracking_uri,
                                                                               tmp_path, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    learners = ["fomaml/functional", {"name": "maml", "config": {"inner_lr": 1e30}, "label": "diverging"}]
    folder = run_and_report(write_suite, tracking_uri, tmp_path,
                            {"learners": learners, "grid": {**TINY["grid"], "devices": ["cpu", "cuda"]}}, expect=1)
    problems = pd.read_csv(folder / "failed_and_skipped.csv")
    assert set(problems["outcome"]) == {"failed", "skipped"}
    assert problems["reason"].str.contains("NonFiniteLossError").any()
    assert problems["reason"].str.contains("CUDA is not available").any()
    assert not list(folder.glob("*_vs_*inner*"))  # nothing swept: no ablation figure


def test_report_of_an_unknown_suite_exits_2(tracking_uri, capsys):
    assert main(["report", "nothing-here", "--tracking-uri", tracking_uri]) == 2
    assert "nothing-here" in capsys.readouterr().err


def test_a_learner_keeps_its_colour_whatever_else_is_in_the_report():
    from bench.consumers.report.figures import palette

    everyone = palette(["finetune", "fomaml/deepcopy", "fomaml/functional", "fomaml/higher", "maml", "mine"])
    some = palette(["maml", "maml", "fomaml/higher", "mine"])  # duplicates, as a runs table has them
    for name in ("maml", "fomaml/higher", "mine"):
        assert some[name] == everyone[name]
    assert len({everyone[n] for n in everyone}) == len(everyone)


def test_report_by_name_uses_the_suite_logged_with_the_runs(write_suite, tracking_uri, tmp_path):
    path = write_suite({"learners": ["maml", "finetune", "fomaml/functional"],
                        "report": {"reference": "maml", "output_dir": str(tmp_path / "r")}})
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", "--no-report"]) == 0
    assert main(["report", "tiny", "--tracking-uri", tracking_uri]) == 0
    compared = pd.read_csv(tmp_path / "r" / "tiny" / "comparisons.csv")
    assert set(compared["B"]) == {"maml"} and set(compared["A"]) == {"finetune", "fomaml/functional"}


def test_variants_are_grouped_by_the_algorithm_the_runs_record(write_suite, tracking_uri, tmp_path):
    """maml and maml/fast are one algorithm (the registry says so, not their names): compared as variants, with maml
    standing for both between algorithms; runs that record no algorithm (older stores) are grouped by the registry."""
    learners = ["maml", "maml/fast", "fomaml/functional"]
    folder = run_and_report(write_suite, tracking_uri, tmp_path, {"learners": learners})

    def grouping():
        between = pd.read_csv(folder / "comparisons.csv")
        variants = pd.read_csv(folder / "variant_comparisons.csv")
        return list(zip(between["A"], between["B"])), list(zip(variants["A"], variants["B"]))

    assert grouping() == ([("maml", "fomaml/functional")], [("maml", "maml/fast")])
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.role = 'cell'")
    assert {r.data.tags["label"]: r.data.tags["algorithm"] for r in runs} == {
        "maml": "maml", "maml/fast": "maml", "fomaml/functional": "fomaml"}
    for run in runs:
        client.delete_tag(run.info.run_id, "algorithm")
    assert main(["report", "tiny", "--tracking-uri", tracking_uri]) == 0
    assert grouping() == ([("maml", "fomaml/functional")], [("maml", "maml/fast")])


def test_labelled_arms_of_one_algorithm_are_arms_not_variants(write_suite, tracking_uri, tmp_path):
    """maml and fomaml each listed twice at inner_steps 1 and 3 (a new user's ablation): four arms, every pair
    compared between configurations, none as "variants" (whose differences are read as rounding), none folded."""
    arms = [{"name": name, "label": f"{short}-S{steps}", "config": {"inner_steps": steps}}
            for name, short in (("maml", "maml"), ("fomaml/functional", "fomaml")) for steps in (1, 3)]
    arms.append({"name": "fomaml/deepcopy", "label": "deepcopy-S3", "config": {"inner_steps": 3}})
    folder = run_and_report(write_suite, tracking_uri, tmp_path, {"learners": arms})
    between = pd.read_csv(folder / "comparisons.csv")
    variants = pd.read_csv(folder / "variant_comparisons.csv")
    assert {frozenset(pair) for pair in zip(between["A"], between["B"])} == {
        frozenset(pair) for pair in itertools.combinations(["maml-S1", "maml-S3", "fomaml-S1", "fomaml-S3"], 2)}
    # the one true variant: the same algorithm and configuration, another implementation
    assert list(zip(variants["A"], variants["B"])) == [("fomaml-S3", "deepcopy-S3")]


def test_holm_adjustment_matches_its_definition():
    # Holm (1979): sorted p_(i) times (m - i + 1), made monotone, capped at 1; nan is not in the family
    assert holm([0.01, 0.04, 0.03, float("nan"), 0.5]) == pytest.approx(
        [0.04, 0.09, 0.09, float("nan"), 0.5], nan_ok=True)


def test_with_one_episode_the_crossed_test_is_the_paired_t_test_over_seeds():
    a, b = np.array([0.61, 0.70, 0.55, 0.66]), np.array([0.58, 0.64, 0.57, 0.60])
    test = crossed_test((a - b).reshape(-1, 1))
    assert test.p == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)


def test_a_difference_between_two_trained_models_is_not_a_difference_between_learners():
    """One seed where A wins every episode, others where it loses: the seed-level test sees no effect, where a
    test over the pooled episodes would have called it (the float32 FOMAML-variant trap)."""
    rng = np.random.default_rng(0)
    per_seed = np.array([0.08, -0.05, 0.01])[:, None] + 0.01 * rng.standard_normal((3, 200))
    test = crossed_test(per_seed)
    assert test.p > 0.5 and test.seeds == 3 and test.episodes == 200
    assert stats.wilcoxon(per_seed[0]).pvalue < 1e-10  # what a per-episode test of seed 0 alone would say
    consistent = 0.04 + 0.01 * rng.standard_normal((5, 200))
    assert crossed_test(consistent).p < 1e-4  # a difference that recurs across seeds is found


def test_the_test_episodes_are_a_sample_too():
    """Every seed sees the same few test episodes: a difference that all seeds share but that swings widely from
    episode to episode is uncertain because of the episodes, and the test must say so."""
    episodes = np.array([0.6, -0.4, 0.5, -0.3, 0.2])  # mean +0.12 over five episodes
    shared = np.tile(episodes, (3, 1))  # identical for every seed: no between-seed spread at all
    test = crossed_test(shared)
    assert test.p > 0.3 and test.half_width > 0.4


def test_runs_that_score_the_same_everywhere_are_called_identical():
    """float64 implementation variants train to the same scores: "identical", not a difference of +0.00 with p = 1."""
    rows = [{"test": crossed_test(table), "unpaired": "", "better": "A better", "worse": "B better"}
            for table in (np.zeros((3, 5)), np.full((3, 5), 1e-12))]
    frame = pd.DataFrame(rows)
    decide([frame], ReportOptions(), m.SCORES["accuracy"])
    assert list(frame["verdict"]) == ["identical (the same score on every seed and episode)",
                                      "A better"]  # a difference, however small, that every seed and episode shows


def test_a_verdict_reads_the_direction_of_its_score():
    """A higher error is worse, a higher accuracy better: the verdict's words follow the metric's direction."""
    table = np.random.default_rng(0).normal(0.5, 0.1, (4, 50))  # A - B clearly positive
    verdicts = {}
    for name in ("accuracy", "mse"):
        frame = pd.DataFrame([{"test": crossed_test(table), "unpaired": "", "better": "A better",
                               "worse": "B better"}])
        decide([frame], ReportOptions(), m.SCORES[name])
        verdicts[name] = frame["verdict"].iloc[0]
    assert verdicts == {"accuracy": "A better", "mse": "B better"}
    assert m.SCORES["accuracy"].signed(0.0125) == "+1.25pp" and m.SCORES["mse"].signed(-0.0123) == "-0.0123"
    assert m.SCORES["accuracy"].signed(float("nan")) == "-"


def test_a_learner_without_a_finite_mean_is_said_not_averaged_over_the_seeds_left():
    """A seed whose test score is not finite (diverged episodes) leaves the learner's mean undefined, as the results
    table shows it ("-"): the conclusions must not name the mean of the other seeds as its score (they once said
    "maml scores best (0.4163)" over a table whose maml mean was "-")."""
    from bench.consumers.report import conclusions
    from bench.consumers.report.loading import Runs

    finished = pd.DataFrame({"learner": ["maml"] * 3 + ["pretrained"] * 3, "n_way": ["1"] * 6,
                             "seed": ["0", "1", "2"] * 2, "test_mse": [0.48, float("nan"), 0.35, 2.17, 2.34, 2.10]})
    empty = pd.DataFrame()
    runs = Runs(finished, empty, empty, empty, empty, ["n_way", "seed"], ["maml", "pretrained"], {}, {}, "mse")
    compared = pd.DataFrame({"A": ["pretrained"], "B": ["maml"], "n_way": ["1"],
                             "verdict": ["no verdict: non-finite episode scores"]})
    (line,) = conclusions._between_learners(runs, compared)
    assert line.startswith("pretrained scores best of those with a finite mean (test MSE 2.2033)"), line
    assert "maml: no finite mean test MSE" in line and "0.4150" not in line
    finished.loc[finished["learner"] == "pretrained", "test_mse"] = float("nan")
    assert conclusions._between_learners(runs, compared) == [
        "pretrained, maml: no finite mean test MSE (non-finite test scores: see the diverged episodes and the results "
        "table)"]


def test_a_figure_leaves_out_and_names_a_mean_that_is_not_finite():
    """Seaborn drops NaN before averaging: a bar would show the mean of the seeds left. The figure leaves that bar
    out and says so on its axes."""
    import matplotlib.pyplot as plt

    from bench.consumers.report import figures

    part = pd.DataFrame({"series": ["maml"] * 3 + ["pretrained"] * 3, "step": [1] * 6,
                         "score": [0.48, float("nan"), 0.35, 2.17, 2.34, 2.10]})
    fig, ax = plt.subplots()
    try:
        kept = figures._finite_only(part, ["series", "step"], "score", ax)
        assert list(kept["series"].unique()) == ["pretrained"]
        assert [t.get_text() for t in ax.texts] == ["not drawn (a seed's value is not finite): maml step=1"]
    finally:
        plt.close(fig)
