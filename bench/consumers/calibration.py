"""Calibration: every verdict kind the report prints, run on simulated experiments with known truth.

Each replicate builds what the store would hold for a suite (cell runs with the runner's own tags, per-episode
scores, per-condition scores with divergence flags) from a score model with known effects, and runs the report's
own path on it: ``loading.assemble`` (which run stands for a cell, episode flags, exclusion) and
``report.analyse`` (pairing, the tests, Holm, the tables). What it counts, per verdict kind:
- under no effect, how often a verdict claims one ("better", "helps", "not reproduced" where measured = published);
- how often every printed 95% interval holds the truth;
- under a stated effect, how often the right verdict is given (power);
- for the equivalence rule, how often "reproduced" is said when the true difference equals the margin.

The score model (errors, lower is better, as the sinusoid's MSE): score[cell, seed, episode] = mu[cell] + u[seed] +
a[cell, seed] + b[episodes, episode] + c[cell, episode] + noise; u and a have the seed SD, b and c the episode SD
(b is shared by every cell scored on the same test episodes: the test-task draw), noise its own SD; heavy tails
draw b and c from a t with 3 degrees of freedom; a diverging episode's score is multiplied by 1e6.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd
import yaml

from bench.consumers.report import analyse
from bench.consumers.report.loading import Stored, assemble
from bench.core import metrics as m
from bench.core import tags as t
from bench.run.execution import cell_tags
from bench.run.test_time import diverged
from bench.spec import published as papers
from bench.spec.suite import ABSENT, Cell, Suite, shipped_suites, suites_from_text
from meta_bench.datasets import load_dataset

BASE = 1.0  # every cell's true mean score under no effect
DESIGNS = ("learners", "option", "factorial", "k_axis", "conditions", "published")


@dataclass(frozen=True)
class Regime:
    design: str  # one of DESIGNS
    seeds: int
    seed_sd: float
    episode_sd: float
    noise_sd: float = 0.05
    episodes: int = 100
    effect: float = 0.0  # the true effect of the tested arm (published: the true measured - published)
    heavy_tails: bool = False
    diverging: float = 0.0  # the share of (cell, seed, episode) scores that blow up
    exclude_diverged: bool = False

    @property
    def name(self) -> str:
        extra = "".join([", t3 tails" if self.heavy_tails else "",
                         f", {self.diverging:.1%} diverging" if self.diverging else "",
                         " (excluded)" if self.exclude_diverged else ""])
        return (f"{self.design}: {self.seeds} seeds, seed SD {self.seed_sd:g}, episode SD {self.episode_sd:g}, "
                f"{self.episodes} episodes{extra}")


def suite_of(regime: Regime) -> list[Suite]:
    """The suite each design is a replicate of (sinusoid, so scores are errors)."""
    evaluation = {"test_episodes": regime.episodes, "query": 5, "exclude_diverged": regime.exclude_diverged}
    raw = {"suite": "calibration", "dataset": {"name": "sinusoid"}, "learners": [{"name": "maml"}],
           "grid": {"n_way": [1], "k_shot": [5], "devices": ["cpu"], "seeds": list(range(regime.seeds))},
           "training": {"meta_iterations": 4, "meta_batch_size": 2}, "evaluation": evaluation,
           "report": {"min_seeds": 2}}
    pair = [{"name": "maml"}, {"name": "finetune", "label": "pretrained", "config": {"finetune_backbone": True}}]
    if regime.design == "learners":
        raw["learners"] = pair
    elif regime.design == "option":
        raw["grid"]["options"] = {"inner_lr": [0.01, 0.02, 0.04]}
    elif regime.design == "factorial":
        raw["grid"]["options"] = {"multi_step_loss": [False, True], "first_order_epochs": [0, 2]}
    elif regime.design == "k_axis":
        raw["grid"]["k_shot"] = [5, 10]
    elif regime.design == "conditions":
        raw["learners"] = pair
        evaluation.update({"k_shot": [5, 10], "inner_steps": [1, 5]})
    elif regime.design == "published":
        raw = yaml.safe_load(_shipped("sinusoid_finn2017"))
        raw["grid"].update({"seeds": list(range(regime.seeds)), "k_shot": [10]})
        raw["learners"] = raw["learners"][:1]
        raw["evaluation"].update({"k_shot": [5], "inner_steps": [1, 5, 10], "exclude_diverged": regime.exclude_diverged})
        raw["report"] = {"min_seeds": 2, "published": {"maml": "finn2017.sinusoid.maml"}}
    else:
        raise ValueError(f"design {regime.design!r}: one of {', '.join(DESIGNS)}")
    return suites_from_text(yaml.safe_dump(raw), f"calibration suite ({regime.design})", notes=[])


def _shipped(name: str) -> str:
    return shipped_suites()[name].read_text(encoding="utf-8")


def _arm(regime: Regime, cell: Cell, condition: tuple[int, object]) -> bool:
    """Whether ``cell`` under test ``condition`` (test K, steps) is the arm that carries the effect."""
    c = cell.learner_config
    return {"learners": cell.label == "maml", "option": getattr(c, "inner_lr", None) == 0.04,
            "factorial": bool(getattr(c, "multi_step_loss", False)), "k_axis": cell.k_shot == 10,
            "conditions": cell.label == "maml", "published": True}[regime.design]


def true_mean(regime: Regime, cell: Cell, condition: tuple[int, object], published: dict) -> float:
    """mu of a cell under a condition: BASE (or, in the published design, the true value behind each published
    row) plus the effect on the arm."""
    base = published.get(condition, BASE) if regime.design == "published" else BASE
    return base + (regime.effect if _arm(regime, cell, condition) else 0.0)


class _Draws:
    """Every random effect of one replicate, drawn once per key (so cells that share a key share the draw)."""

    def __init__(self, regime: Regime, replicate: int):
        self.regime, self.replicate, self.memo = regime, replicate, {}

    def _rng(self, key: tuple) -> np.random.Generator:
        return np.random.default_rng([self.replicate, *(zlib.crc32(repr(k).encode()) for k in key)])

    def normal(self, key: tuple, sd: float, size: int | None = None):
        if key not in self.memo:
            rng = self._rng(key)
            if self.regime.heavy_tails and key[0] in ("b", "c"):  # t3 scaled to the same SD
                self.memo[key] = sd * rng.standard_t(3, size) / math.sqrt(3.0)
            else:
                self.memo[key] = sd * rng.standard_normal(size)
        return self.memo[key]


def _scores(regime: Regime, draws: _Draws, cell: Cell, condition: tuple[int, object], mu: float) -> np.ndarray:
    k_test, steps = condition
    e, seed = regime.episodes, cell.seed
    episode_set = (cell.n_way, k_test, cell.evaluation.episode_seed)  # which test episodes were drawn
    definition = tuple(sorted((a, v) for a, v in cell.axes.items() if a != "seed"))
    arm = (cell.label, definition, k_test, steps)  # what every seed of one cell definition shares
    values = (mu + draws.normal(("u", seed), regime.seed_sd) + draws.normal(("a", arm, seed), regime.seed_sd)
              + draws.normal(("b", episode_set), regime.episode_sd, e) + draws.normal(("c", arm), regime.episode_sd, e)
              + draws.normal(("n", arm, seed), regime.noise_sd, e))
    if regime.diverging:
        blown = draws._rng(("d", arm, seed)).random(e) < regime.diverging
        values = np.where(blown, np.abs(values) * 1e6, values)
    return values


def _conditions(cell: Cell) -> list[tuple[int, object]]:
    steps = cell.test_steps
    return [(k, s) for k in cell.test_k_shots for s in (steps if steps != (None,) else (None,))]


def replicate(regime: Regime, suites: list[Suite], number: int, published: dict) -> tuple[Stored, dict]:
    """What the store would hold after running ``suites`` once under ``regime``, and each cell's true means."""
    draws, scale = _Draws(regime, number), load_dataset("sinusoid").zero_prediction_mse()
    runs, episodes, conditions, truth = [], {}, {}, {}
    for i, cell in enumerate(c for s in suites for c in s.cells):
        run_id = f"r{i:04d}"
        rows, primary = [], None
        for condition in _conditions(cell):
            mu = true_mean(regime, cell, condition, published)
            truth[(cell.config_hash, condition)] = mu
            values = _scores(regime, draws, cell, condition, mu)
            flags = diverged(list(values), True, cell.evaluation.divergence_factor, scale)
            k_test, steps = condition
            rows += [(k_test, ABSENT if steps is None else str(steps), e, v, f)
                     for e, (v, f) in enumerate(zip(values, flags))]
            if condition == _conditions(cell)[_primary(cell)]:
                primary = values
        episodes[run_id] = pd.DataFrame({"episode": range(regime.episodes), "mse": primary})
        conditions[run_id] = pd.DataFrame(rows, columns=["test_k_shot", "test_steps", "episode", "score", "diverged"])
        tags = {**cell_tags(cell, "calibration", "simulated"), t.OUTCOME: t.OUTCOME_FINISHED, t.SCORE: "mse"}
        metrics = {m.SCORES["mse"].name: float(np.mean(primary)), m.ci95("mse"): 0.0}
        truth[(cell.config_hash, "primary")] = true_mean(regime, cell, _conditions(cell)[_primary(cell)], published)
        runs.append(SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=i, status="FINISHED"),
                                    data=SimpleNamespace(tags=tags, metrics=metrics)))
    dataset = load_dataset("sinusoid").statistics()
    return Stored(runs, episodes, conditions, [], dataset), truth


def _primary(cell: Cell) -> int:
    """Where the primary condition (first test K, most steps) stands in ``_conditions(cell)``."""
    conditions = _conditions(cell)
    return max(range(len(conditions)), key=lambda i: (conditions[i][0] == cell.test_k_shots[0],
                                                      -1 if conditions[i][1] is None else conditions[i][1]))


CLAIMS = {"better", "helps", "hurts", "stronger together", "weaker together"}


def _claims(verdict: str) -> bool:
    return verdict.endswith(" better") or verdict in CLAIMS


@dataclass
class Tally:
    """Counts of one verdict kind over the replicates of one regime."""

    tests: int = 0
    claims: int = 0  # verdicts claiming a difference
    right: int = 0  # claims in the true direction (under an effect)
    intervals: int = 0
    covered: int = 0

    def add(self, claimed: bool, right: bool, covered: bool | None) -> None:
        self.tests += 1
        self.claims += claimed
        self.right += claimed and right
        if covered is not None:
            self.intervals += 1
            self.covered += covered


@dataclass
class Outcome:
    regime: Regime
    replicates: int
    kinds: dict[str, Tally] = field(default_factory=dict)
    reports_with_a_false_claim: int = 0  # Holm's family-wise error: any false claim in one report

    def tally(self, kind: str) -> Tally:
        return self.kinds.setdefault(kind, Tally())


def _covers(test, truth: float) -> bool | None:
    if not math.isfinite(test.half_width):
        return None
    return abs(test.mean - truth) <= test.half_width


def _effect_truth(regime: Regime, row: dict) -> float:
    """The true value of an ablation row's contrast: the effect where the arm's level is the level tested."""
    if regime.effect == 0:
        return 0.0
    component, levels = row["component"], row["levels"]
    arm_level = {"option": ("inner_lr", "0.04"), "factorial": ("multi_step_loss", "True"),
                 "k_axis": ("k_shot", "10")}.get(regime.design)
    if arm_level and component == arm_level[0] and levels.endswith(f"→ {arm_level[1]}"):
        return regime.effect
    return 0.0


def _judge_comparisons(outcome: Outcome, regime: Regime, frame: pd.DataFrame, kind: str) -> int:
    false = 0
    for row in frame.to_dict("records") if not frame.empty else []:
        if row["unpaired"]:
            continue
        truth = (regime.effect if row["A"] == "maml" else -regime.effect) if regime.effect else 0.0
        claimed = _claims(row["verdict"])
        # lower errors are better: A better when A - B is negative
        right = claimed and truth != 0 and ((row["verdict"] == row["better"]) == (truth < 0))
        outcome.tally(kind).add(claimed, right, _covers(row["test"], truth))
        false += claimed and truth == 0
    return false


def _judge_effects(outcome: Outcome, regime: Regime, frame: pd.DataFrame) -> int:
    false = 0
    for row in frame.to_dict("records") if not frame.empty else []:
        if row["unpaired"]:
            continue
        truth = _effect_truth(regime, row)
        kind = ("effect of N or K" if row["component"] in ("n_way", "k_shot", "test_k_shot")
                else f"ablation {row['kind']}")
        claimed = _claims(row["verdict"])
        right = claimed and truth != 0 and ((row["verdict"] == row["better"]) == (truth < 0))
        outcome.tally(kind).add(claimed, right, _covers(row["test"], truth))
        false += claimed and truth == 0
    return false


def _interval(text: str) -> tuple[float, float] | None:
    """``mean ± half`` as printed; None where the table printed no interval."""
    parts = str(text).split(" (")[0].split(" ± ")
    try:
        return float(parts[0]), float(parts[1].rstrip("%"))
    except (IndexError, ValueError):
        return None


def _judge_results(outcome: Outcome, regime: Regime, analysis, truth: dict) -> None:
    """The results table's printed interval of each learner's mean score against its true mean."""
    runs = analysis.runs
    column = next(c for c in analysis.frames["results"].columns if c.startswith(m.SCORES["mse"].label))
    for row in analysis.frames["results"].to_dict("records"):  # each row's runs: its learner and conditions
        f = runs.finished
        part = f[(f["learner"] == row["learner"]) & np.logical_and.reduce(
            [f[a] == row[a] for a in runs.conditions])]
        cell_hash = part["config_hash"].iloc[0]
        mu = truth[(cell_hash, "primary")]
        printed = _interval(row[column])
        if printed is not None and len(part) > 1:
            outcome.tally("results interval").add(False, False, abs(printed[0] - mu) <= printed[1] + 5e-5)


def _judge_published(outcome: Outcome, regime: Regime, frame: pd.DataFrame, margin_case: bool) -> None:
    for row in frame.to_dict("records") if not frame.empty else []:
        verdict = row["verdict"]
        if margin_case:  # the true difference is the margin: "reproduced" is the error
            outcome.tally("published: reproduced at the margin").add(verdict == "reproduced", False, None)
        else:
            claimed = verdict.startswith("not reproduced")
            outcome.tally("published: not reproduced when equal" if regime.effect == 0
                          else "published").add(claimed, False, None)
            if regime.effect == 0:
                outcome.tally("published: power (reproduced when equal)").add(verdict == "reproduced", True, None)


def calibrate(regime: Regime, replicates: int, margin_case: bool = False) -> Outcome:
    """Run ``replicates`` simulated experiments of ``regime`` through the report's path and tally its verdicts.
    ``margin_case``: the published design with the true difference at the margin of each published row."""
    suites = suite_of(regime)
    truth_base = {}
    if regime.design == "published":  # the truth: each published value (plus its margin in the margin case)
        truth_base = {(p.test_k_shot, p.test_steps): p.value + (p.margin_value if margin_case else 0.0)
                      for p in papers.under_conditions("finn2017.sinusoid.maml", 1, 10)}
    outcome = Outcome(regime, replicates)
    for number in range(replicates):
        stored, truth = replicate(regime, suites, number, truth_base)
        analysis = analyse(assemble(stored, suites), suites)
        false = _judge_comparisons(outcome, regime, analysis.compared, "learners")
        false += _judge_comparisons(outcome, regime, analysis.compared_under, "learners by test condition")
        if regime.design != "published":  # there the test-time steps change the true mean (the published curve)
            false += _judge_effects(outcome, regime, analysis.effects)
        _judge_results(outcome, regime, analysis, truth)
        if regime.design == "published":
            _judge_published(outcome, regime, analysis.frames["published_test_conditions"], margin_case)
        outcome.reports_with_a_false_claim += false > 0
    return outcome


ALPHA = 0.05


def _mc_half(rate: float, n: int) -> float:
    """Three Monte-Carlo standard errors of a rate over ``n`` replicates (tests within one report are not
    independent: the replicate is the unit)."""
    return 3 * math.sqrt(rate * (1 - rate) / n) if n else math.nan


def rows(outcome: Outcome) -> list[dict]:
    """One row per verdict kind of one regime: false-verdict rate (or, under an effect, power), coverage, and
    whether each is within its bound."""
    n, regime, out = outcome.replicates, outcome.regime, []
    for kind, tally in outcome.kinds.items():
        rate = tally.claims / tally.tests if tally.tests else math.nan
        coverage = tally.covered / tally.intervals if tally.intervals else math.nan
        null = regime.effect == 0 and "power" not in kind
        row = {"verdict kind": kind, "regime": regime.name, "effect": regime.effect, "replicates": n,
               "tests": tally.tests}
        if "power" in kind or (regime.effect != 0 and "published" not in kind and kind != "results interval"):
            row["power"] = (tally.right if "power" not in kind else tally.claims) / tally.tests if tally.tests \
                else math.nan
            row["false-verdict rate"] = math.nan
        else:
            row["power"] = math.nan
            row["false-verdict rate"] = rate if kind != "results interval" else math.nan  # no verdict: coverage only
        bound_ok = True
        if null or kind.startswith("published: reproduced at the margin"):
            if not math.isnan(row["false-verdict rate"]):
                bound_ok = row["false-verdict rate"] <= ALPHA + _mc_half(ALPHA, n)
        row["coverage"] = coverage
        if not math.isnan(coverage):
            bound_ok = bound_ok and coverage >= 0.95 - _mc_half(0.95, n)
        row["within bound"] = bound_ok
        out.append(row)
    if regime.effect == 0 and regime.design != "published":
        family = outcome.reports_with_a_false_claim / n
        out.append({"verdict kind": "whole report (Holm, family-wise)", "regime": regime.name, "effect": 0.0,
                    "replicates": n, "tests": n, "power": math.nan, "false-verdict rate": family,
                    "coverage": math.nan, "within bound": family <= ALPHA + _mc_half(ALPHA, n)})
    return out
