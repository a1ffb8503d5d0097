"""The report never pairs or merges runs wrongly: runs reused from another suite definition, documents of one suite
that differ in a setting, runs scored or made by other code."""
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.store import tracking
from bench.__main__ import main
from bench.spec.conditions import cell_axes, settings_between_learners
from bench.spec.suite import Cell, expand, suites_from_text
from tests.suites import TINY


def run(path, tracking_uri, *extra):
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "--no-progress", *extra]) == 0


def logged_runs(tracking_uri) -> pd.DataFrame:
    """Every cell run as MLflow holds it: label, seed, the settings it ran with (params) and its test accuracy."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    return pd.DataFrame([{"label": r.data.tags["label"], "seed": r.data.params["seed"],
                          "lr": r.data.params["training.lr"], "inner_lr": r.data.params.get("learner_config.inner_lr"),
                          "inner_steps": r.data.params.get("learner_config.inner_steps"),
                          "accuracy": r.data.metrics["test_accuracy"]}
                         for r in client.search_runs([experiment], "tags.role = 'cell'")])


def difference(row, a, b) -> None:
    """The comparison's A - B is the score difference of exactly the runs ``a`` and ``b`` (one each)."""
    assert len(a) == 1 and len(b) == 1
    assert float(row["A - B"].removesuffix("pp")) == pytest.approx(
        100 * (a["accuracy"].iloc[0] - b["accuracy"].iloc[0]), abs=0.006)


def test_reused_runs_take_their_axes_from_the_suite_as_it_stands(write_suite, tracking_uri, tmp_path):
    """Runs made before inner_steps was swept carry no axis.inner_steps tag; reused under the sweep (same config
    hash: 1 is the default) they are the inner_steps=1 cells, not learners lacking the option."""
    suite = {"learners": ["maml", "anil"], "report": {"output_dir": str(tmp_path / "reports")}}
    run(write_suite(suite), tracking_uri, "--no-report")
    run(write_suite({**suite, "grid": {**TINY["grid"], "options": {"inner_steps": [1, 2]}}}), tracking_uri)
    folder = tmp_path / "reports" / "tiny"
    results = pd.read_csv(folder / "results.csv", dtype=str)
    assert sorted(zip(results["learner"], results["inner_steps"])) == [
        ("anil", "1"), ("anil", "2"), ("maml", "1"), ("maml", "2")]
    assert set(pd.read_csv(folder / "runs.csv", dtype=str)["inner_steps"]) == {"1", "2"}
    compared = pd.read_csv(folder / "comparisons.csv", dtype=str)
    assert sorted(compared["inner_steps"]) == ["1", "2"]  # maml against anil at each S, nothing across S
    runs = logged_runs(tracking_uri)
    for row in compared.to_dict("records"):
        a, b = (runs[(runs["label"] == label) & (runs["inner_steps"] == row["inner_steps"])]
                for label in (row["A"], row["B"]))
        difference(row, a, b)


def test_documents_of_one_suite_that_differ_in_a_setting_are_never_merged_or_crossed(tracking_uri, tmp_path, capsys):
    """Three documents of one suite, equal N and K: the second trains with another lr, the third gives maml another
    inner_lr. Each definition is its own row (not seeds of one), named by the setting; a comparison pairs runs that
    differ in the learner alone, and finetune (the same in the first and third, and without an inner_lr) stands
    against both maml."""
    base = {**TINY, "learners": ["maml", "finetune"], "report": {"output_dir": str(tmp_path / "reports")}}
    other_lr = {**base, "training": {**TINY["training"], "lr": 0.01}}
    other_inner_lr = {**base, "learners": [{"name": "maml", "config": {"inner_lr": 0.1}}, "finetune"]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump_all([base, other_lr, other_inner_lr]))
    run(path, tracking_uri)
    (printed,) = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["learner"]]
    assert "training.lr" in printed and "config.inner_lr" in printed  # `bench run`'s table tells the cells apart too
    folder = tmp_path / "reports" / "tiny"
    results = pd.read_csv(folder / "results.csv", dtype=str)
    assert sorted(zip(results["learner"], results["training.lr"], results["config.inner_lr"])) == [
        ("finetune", "0.001", "-"), ("finetune", "0.01", "-"),
        ("maml", "0.001", "0.1"), ("maml", "0.001", "0.4"), ("maml", "0.01", "0.4")]
    assert (results["seeds"] == "1").all()
    compared = pd.read_csv(folder / "comparisons.csv", dtype=str)
    assert sorted(zip(compared["training.lr"], compared["config.inner_lr"])) == [
        ("0.001", "0.1"), ("0.001", "0.4"), ("0.01", "0.4")]
    runs = logged_runs(tracking_uri)
    for row in compared.to_dict("records"):
        same_lr = runs[runs["lr"] == row["training.lr"]]
        difference(row, same_lr[(same_lr["label"] == "maml") & (same_lr["inner_lr"] == row["config.inner_lr"])],
                   same_lr[same_lr["label"] == "finetune"])


def cells_of(*documents):
    return [cell for suite in suites_from_text(yaml.safe_dump_all(documents), "suite.yaml") for cell in expand(suite)]


def test_a_setting_one_learner_runs_with_in_two_ways_is_a_condition_like_a_swept_option():
    """maml's inner_lr differs between the documents, anil's does not: anil shows its own (and pairs where it is
    equal, as with grid.options), finetune has none ("-": pairs with each)."""
    learners = ["maml", "anil", "finetune"]
    axes, by_cell = cell_axes(cells_of({**TINY, "learners": learners}, {
        **TINY, "learners": [{"name": "maml", "config": {"inner_lr": 0.1}}, "anil", "finetune"]}))
    assert axes == ["n_way", "k_shot", "device", "seed", "config.inner_lr"]
    assert sorted((c["config.inner_lr"]) for c in by_cell.values()) == ["-", "0.1", "0.4", "0.4"]


def test_settings_that_differ_between_learners_only_are_part_of_what_is_compared():
    """A tuned suite: one document per learner with that learner's best training.lr and inner_lr. Nothing varies
    within a learner, so nothing is a condition and the learners are compared with each other; the header names the
    shared settings in which they differ (not their own configs, which differ by nature)."""
    maml = {"name": "maml", "config": {"inner_lr": 0.1}}
    cells = cells_of({**TINY, "learners": [maml], "training": {**TINY["training"], "lr": 0.01}},
                     {**TINY, "learners": ["anil"], "training": {**TINY["training"], "lr": 0.003}})
    axes, by_cell = cell_axes(cells)
    assert axes == ["n_way", "k_shot", "device", "seed"] and len(by_cell) == 2
    assert settings_between_learners(cells) == ["training.lr: maml 0.01, anil 0.003"]


@pytest.fixture(scope="module")
def report_of_two_codes(tmp_path_factory):
    """maml run by older code (another commit, another evaluation fingerprint: as a run reused under
    --reuse-other-code keeps them), then anil added by the current code; maml's run is reused."""
    folder = tmp_path_factory.mktemp("two_codes")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    suite = {**TINY, "learners": ["maml"], "report": {"output_dir": str(folder / "reports")}}
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Cell, "evaluation_fingerprint", property(lambda cell: "older-evaluation"))
        patch.setattr(tracking, "git_commit", lambda: "a" * 40)
        run(path, uri, "--no-report")
    path.write_text(yaml.safe_dump({**suite, "learners": ["maml", "anil"]}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracking, "git_commit", lambda: "b" * 40 + "-dirty")
        run(path, uri)
    return folder / "reports" / "tiny"


def test_runs_scored_by_other_evaluation_code_are_listed_as_not_compared(report_of_two_codes):
    (row,) = pd.read_csv(report_of_two_codes / "comparisons.csv", dtype=str, keep_default_na=False).to_dict("records")
    assert (row["A"], row["B"], row["seeds"], row["A - B"], row["p (Holm)"]) == ("maml", "anil", "0", "-", "-")
    assert row["verdict"].startswith("not compared: maml and anil (seeds 0) were scored on different test episodes "
                                     "or by different dataset or evaluation code (evaluation fingerprints ")
    assert "fingerprints older-evaluation" in row["verdict"]  # maml's, as its run was tagged


def test_the_header_says_which_code_made_each_learners_runs(report_of_two_codes):
    header = (report_of_two_codes / "report.md").read_text().split("## Dataset")[0]
    (warning,) = [line for line in header.splitlines() if "more than one commit" in line]
    assert "maml: code " in warning and "at commit aaaaaaaaaaaa (1 run)" in warning
    assert "anil: code " in warning and "at commit bbbbbbbbbbbb-dirty (1 run)" in warning
