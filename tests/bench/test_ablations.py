"""Ablation effects on constructed MLflow runs: cell runs logged as the runner logs them, with per-episode scores
built from known effects, so that every effect the report prints can be checked against the numbers put in."""
import re
import zlib

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from scipy import stats

from bench.consumers.report import build_report
from bench.core import metrics as m
from bench.core import tags as t
from bench.spec.suite import suites_from_text
from bench.store import tracking
from tests.suites import TINY

SEEDS = [0, 1, 2, 3]
EPISODES = 60


def constructed(tracking_uri, tmp_path, grid_options, score_of, grid=None, report=None, curve_of=None):
    """Log one finished cell run per cell of a one-learner suite sweeping ``grid_options``; episode e of a cell
    scores ``score_of(cell, e)``; ``curve_of(cell)``: its validation curve, {iteration: score}. Returns the report's
    folder."""
    raw = {**TINY, "learners": ["maml"], "grid": {**TINY["grid"], "seeds": SEEDS, "options": grid_options,
                                                   **(grid or {})},
           "evaluation": {"test_episodes": EPISODES, "query": 2},
           "report": {"output_dir": str(tmp_path / "reports"), **(report or {})}}
    suites = suites_from_text(yaml.safe_dump(raw), "constructed suite")
    client = MlflowClient(tracking_uri)
    experiment = tracking.experiment_id(client, "tiny")
    for cell in suites[0].cells:
        run = client.create_run(experiment, tags={
            t.ROLE: t.ROLE_CELL, t.CONFIG_HASH: cell.config_hash, t.EVAL_FINGERPRINT: cell.evaluation_fingerprint,
            t.LABEL: cell.label, t.LEARNER: cell.learner, t.ALGORITHM: "maml", t.OUTCOME: t.OUTCOME_FINISHED,
            t.SCORE: "accuracy"})
        scores = np.array([score_of(cell, e) for e in range(EPISODES)])
        for name, value in ((m.SCORES["accuracy"].name, scores.mean()), (m.ci95("accuracy"), 0.01),
                            (m.TRAIN_MS.name, 10.0 * (1 + cell.learner_config.multi_step_loss)),
                            (m.SAVED_MB.name, 2e6)):
            client.log_metric(run.info.run_id, name, float(value))
        path = tmp_path / run.info.run_id / "test_episodes.csv"
        path.parent.mkdir()
        pd.DataFrame({"episode": range(EPISODES), "accuracy": scores}).to_csv(path, index=False)
        client.log_artifact(run.info.run_id, str(path))
        for iteration, value in (curve_of(cell) if curve_of else {}).items():
            client.log_metric(run.info.run_id, m.VAL_SCORE, value, step=iteration)
        client.set_terminated(run.info.run_id)
    return build_report("tiny", tracking_uri, suites).parent


def noise(*key):
    """A reproducible standard normal per key (seed, cell, episode): independent of the order cells are logged."""
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in key]).standard_normal()


def three_factors(cell, episode):
    """MSL: +3pp on every seed; LSLR: +6pp on seeds 0-2, -10pp on seed 3 (+2pp on average, but its sign flips
    across seeds: an episode-level test would call it); first-order epochs: +4pp
    only together with MSL (an interaction, no effect alone); and seed, episode and cell-level noise."""
    c, s = cell.learner_config, cell.seed
    msl, lslr, annealed = c.multi_step_loss, c.inner_rates == "per_layer_step", c.first_order_epochs == 2
    value = 0.5 + 0.05 * noise("seed", s) + 0.08 * noise("episode", episode)
    value += 0.03 * msl + (0.06 if s != 3 else -0.10) * lslr + 0.04 * (msl and annealed)
    return value + 0.01 * noise(s, msl, lslr, annealed, episode)


OPTIONS = {"multi_step_loss": [False, True], "inner_rates": ["fixed", "per_layer_step"], "first_order_epochs": [0, 2]}


@pytest.fixture(scope="module")
def factorial_report(tmp_path_factory):
    """One constructed store and report for the tests that only read it."""
    tmp_path = tmp_path_factory.mktemp("factorial")
    folder = constructed(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, OPTIONS, three_factors)
    return folder, pd.read_csv(folder / "ablations.csv", dtype=str, keep_default_na=False)


def effect(table, kind, component, at="-"):
    (row,) = table[(table["effect"] == kind) & (table["component"] == component) & (table["at"] == at)].to_dict(
        "records")
    return row


def points(value):
    return float(value.removesuffix("pp"))


def test_a_consistent_effect_helps_with_its_size_and_a_flipping_one_is_no_evidence(factorial_report):
    _, table = factorial_report
    msl = effect(table, "main effect", "multi_step_loss")
    # +3pp everywhere, +4pp more where first-order epochs are 2 (half the cells): +5pp averaged
    assert msl["levels"] == "False → True" and msl["verdict"] == "helps"
    assert points(msl["difference"]) == pytest.approx(5.0, abs=0.3)
    assert msl["time / meta-iteration"] == "10.0 → 20.0 ms (×2.00)"  # the cost beside the effect
    flipping = effect(table, "main effect", "inner_rates")
    assert flipping["verdict"] == "no evidence of a difference"
    assert points(flipping["difference"]) == pytest.approx(2.0, abs=0.3)
    simple = table[(table["effect"] == "simple effect") & (table["component"] == "inner_rates")]
    assert len(simple) == 4 and (simple["verdict"] == "no evidence of a difference").all()
    # the simple effects of MSL at every setting of the others: +3pp without annealing, +7pp with it
    for at, size in (("first_order_epochs=0, inner_rates=fixed", 3.0), ("first_order_epochs=2, inner_rates=fixed", 7.0)):
        row = effect(table, "simple effect", "multi_step_loss", at)
        assert row["verdict"] == "helps" and points(row["difference"]) == pytest.approx(size, abs=0.3)


def test_a_built_in_interaction_is_found_and_an_additive_pair_is_not_one(factorial_report):
    _, table = factorial_report
    # components in the report's axis order (swept options alphabetically), levels baseline → level
    built_in = effect(table, "interaction", "first_order_epochs × multi_step_loss")
    assert built_in["levels"] == "0 → 2 × False → True"
    assert built_in["verdict"] == "stronger together" and points(built_in["difference"]) == pytest.approx(4.0, abs=0.3)
    assert effect(table, "main effect", "first_order_epochs")["verdict"] == "helps"  # +2pp averaged over MSL
    additive = effect(table, "interaction", "inner_rates × multi_step_loss")
    assert additive["verdict"] == "no evidence of a difference" and abs(points(additive["difference"])) < 1
    assert len(table[table["effect"] == "interaction"]) == 3 and len(table[table["effect"] == "main effect"]) == 3


def test_the_holm_family_is_every_printed_p_value(factorial_report):
    folder, table = factorial_report
    tables = [pd.read_csv(path, dtype=str, keep_default_na=False) for path in folder.glob("*.csv")
              if path.stat().st_size > 1]  # an empty table is written as an empty line
    printed = sum((frame["p (Holm)"] != "-").sum() for frame in tables if "p (Holm)" in frame)
    stated = int(re.search(r"Holm family: (\d+) tests", (folder / "report.md").read_text()).group(1))
    assert stated == printed == len(table) == 12 + 3 + 3  # simple effects, main effects, interactions
    page = (folder / "report.md").read_text()
    assert "## Ablations" in page and "ablation_maml.png" in page and "unit of replication" in page
    decided = table["verdict"].isin(["helps", "hurts", "stronger together", "weaker together"]).sum()
    assert f"- ablations: {decided} of 18 effects have a verdict: maml: " in page  # the report's first lines
    assert (folder / "ablation_maml.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_named_baseline_turns_the_comparison_around(tracking_uri, tmp_path):
    folder = constructed(tracking_uri, tmp_path, OPTIONS, three_factors, report={
        "baselines": {"multi_step_loss": True}})
    table = pd.read_csv(folder / "ablations.csv", dtype=str, keep_default_na=False)
    row = effect(table, "main effect", "multi_step_loss")
    assert row["levels"] == "True → False" and row["verdict"] == "hurts"
    assert points(row["difference"]) == pytest.approx(-5.0, abs=0.3)


def test_an_effect_of_k_adds_each_levels_test_episode_draw_to_the_variance(tracking_uri, tmp_path):
    """K changes the test episodes themselves: nothing pairs episode by episode. Each K's episodes are one draw shared
    by every seed, so the variance adds each level's between-episode variance of its seed-averaged scores to the
    spread of the per-seed differences, each source's standard error scaled by its own t quantile and added in
    quadrature: computed here independently with numpy and scipy."""
    def score(cell, episode):
        return 0.4 + 0.1 * (cell.k_shot == 2) + 0.03 * noise("seed", cell.seed) + 0.1 * noise(cell.k_shot, episode) \
            + 0.02 * noise(cell.seed, cell.k_shot, episode)
    folder = constructed(tracking_uri, tmp_path, {}, score, grid={"k_shot": [1, 2]})
    (row,) = pd.read_csv(folder / "ablations.csv", dtype=str, keep_default_na=False).to_dict("records")
    assert (row["component"], row["levels"], row["episodes"]) == ("k_shot", "1 → 2", str(EPISODES))
    table = {k: np.array([[score(type("Cell", (), {"k_shot": k, "seed": s}), e) for e in range(EPISODES)]
                          for s in SEEDS]) for k in (1, 2)}
    per_seed = table[2].mean(axis=1) - table[1].mean(axis=1)
    parts = [(per_seed.var(ddof=1) / len(SEEDS), len(SEEDS) - 1)] + [
        (table[k].mean(axis=0).var(ddof=1) / EPISODES, EPISODES - 1) for k in (2, 1)]
    def half(level):
        return np.sqrt(sum(stats.t.ppf(0.5 + level / 2, d) ** 2 * v for v, d in parts))

    low, high = (points(x) for x in row["95% CI"].strip("[]").split(", "))
    assert (high - low) / 2 == pytest.approx(100 * half(0.95), abs=0.006)
    p = float(row["p"])  # the level at which the interval just reaches 0
    assert half(1 - p) == pytest.approx(abs(per_seed.mean()), rel=2e-2)
    assert points(row["difference"]) == pytest.approx(100 * per_seed.mean(), abs=0.006)


def test_the_conclusions_say_where_a_validation_curve_fell_or_still_rises(tracking_uri, tmp_path):
    """Past its best at the budget, or undertrained: said in the report's first lines, from the curves MLflow holds."""
    def curve(cell):
        return {0: 0.5, 20: 0.6, 40: 0.55, 60: 0.5} if not cell.learner_config.multi_step_loss else \
            {0: 0.4, 20: 0.5, 40: 0.6, 60: 0.7}
    folder = constructed(tracking_uri, tmp_path, {"multi_step_loss": [False, True]}, three_factors, curve_of=curve)
    concluded = (folder / "report.md").read_text().split("## Conclusions")[1].split("\n## ")[0]
    assert ("maml (multi_step_loss=False): validation score fell from 60.00% (iteration 20) to 50.00% at the end "
            "(iteration 60): past its best at this budget") in concluded
    assert ("maml (multi_step_loss=True): validation score still rising at the end (60.00% to 70.00%): undertrained "
            "at this budget") in concluded
