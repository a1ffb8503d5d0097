"""The sequential design's error rates and cost, by simulation with known truth through the report's own path.

Each replicate is one simulated store (``bench.consumers.calibration.replicate``: the runner's tags, per-episode
scores, seeds as the unit) of a suite of three learners (maml, a fine-tuned baseline, reptile) on the sinusoid with a
seeds plan; maml's true error is ``effect`` above the other two's, which are equal. Every seed of the budget is drawn
up front: a look reads only its first n_k seeds, so what a sequential run would have run and decided is exactly what
replaying its looks on these data decides. Three procedures on the same data:

- *sequential*: the report itself (``report.analyse`` of the whole store replays the looks and writes their verdicts
  into its comparison rows, which are judged here), with its cell runs;
- *naive*: at every look, plain Holm at alpha on that look's p-values, stopping what it rejects (the way one fools
  oneself by adding seeds until something is significant);
- *fixed n*: one look at n seeds, plain Holm (the report's fixed design), for each look's n: what equal power costs
  without looks.

Counted per procedure: the family-wise false-verdict rate (replicates with any claim of a difference where there is
none, or of equivalence where the true difference is at least the margin), power (true differences decided in the
right direction), equivalence found where the truth is equal, and mean cell runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import yaml

from bench.consumers.calibration import ALPHA, Regime, replicate
from bench.consumers.report import analyse, look
from bench.consumers.report.loading import assemble, first_seeds
from bench.consumers.report.statistics import holm
from bench.consumers.sequential.design import DECIDED, EQUIVALENT, decide
from bench.consumers.sequential.walk import cell_runs, questions_of, still_needed
from bench.spec.suite import Suite, suites_from_text

LEARNERS = [{"name": "maml"}, {"name": "finetune", "label": "pretrained", "config": {"finetune_backbone": True}},
            {"name": "reptile"}]


@dataclass(frozen=True)
class Setting:
    name: str
    effect: float  # maml's true error minus the others' (lower is better)
    margin: float | None = None
    looks: tuple[int, ...] = (3, 6, 10)
    design: str = "obrien-fleming"
    seed_sd: float = 0.1
    episode_sd: float = 0.05
    episodes: int = 100
    diverging: float = 0.0  # the share of (cell, seed, episode) scores that blow up (kept in: not excluded)


def suite_of(setting: Setting) -> list[Suite]:
    seeds = {"looks": list(setting.looks), "design": setting.design}
    if setting.margin is not None:
        seeds["equivalence_margin"] = setting.margin
    raw = {"suite": "calibration", "dataset": {"name": "sinusoid"}, "learners": LEARNERS,
           "grid": {"n_way": [1], "k_shot": [5], "devices": ["cpu"], "seeds": seeds},
           "training": {"meta_iterations": 4, "meta_batch_size": 2},
           "evaluation": {"test_episodes": setting.episodes, "query": 5}, "report": {"min_seeds": 2}}
    return suites_from_text(yaml.safe_dump(raw), "sequential calibration suite", notes=[])


def truth(setting: Setting, a: str, b: str) -> float:
    """The true A - B error."""
    return setting.effect * ((a == "maml") - (b == "maml"))


@dataclass
class Count:
    """One procedure's tallies over the replicates of one setting."""

    replicates: int = 0
    false_family: int = 0  # replicates with any false claim
    true_differences: int = 0
    right: int = 0
    equal: int = 0  # comparisons whose truth is 0
    equivalent_when_equal: int = 0
    cells: list[int] = field(default_factory=list)

    def add(self, verdicts: dict[tuple[str, str], str], setting: Setting, cells: int) -> None:
        self.replicates += 1
        self.cells.append(cells)
        false = False
        for (a, b), verdict in verdicts.items():
            diff = truth(setting, a, b)
            claimed_better = verdict.endswith(" better")
            if claimed_better:
                right_way = (verdict == f"{a} better") == (diff < 0)
                false |= diff == 0 or not right_way
            if verdict.startswith("equivalent"):
                false |= setting.margin is not None and abs(diff) >= setting.margin
            if diff != 0:
                self.true_differences += 1
                self.right += claimed_better and (verdict == f"{a} better") == (diff < 0)
            else:
                self.equal += 1
                self.equivalent_when_equal += verdict.startswith("equivalent")
        self.false_family += false


def _verdict(decision, a: str, b: str) -> str:
    return decision.verdict if decision.state in (DECIDED, EQUIVALENT) else "no verdict"


def _emulated(questions, tests, setting: Setting, suites, naive: bool) -> tuple[dict, int]:
    """Decisions and cell runs of the looks replayed on per-look tests (what ``walk`` does while running)."""
    plan, options = suites[0].grid.plan, suites[0].report
    definitions = {d for q in questions.values() for d in q.needs}
    needed, decisions = [definitions], {}
    for k in range(len(tests)):
        decisions = decide(questions, tests[:k + 1], plan, options.alpha, options.min_seeds, naive)
        going = still_needed(questions, decisions)
        if not going or k == len(tests) - 1:
            break
        needed.append(going)
    return decisions, cell_runs(plan, needed)


def _fixed(questions, tests_at, suites) -> dict:
    """Plain Holm over the family's tests of one look: the fixed design of that many seeds."""
    options, keys = suites[0].report, [key for key, q in questions.items() if q.family]
    pvalues = [tests_at[key].p if key in tests_at and tests_at[key].seeds >= options.min_seeds else math.nan
               for key in keys]
    verdicts = {}
    for key, p in zip(keys, holm(pvalues)):
        q, test = questions[key], tests_at[key]
        verdicts[key] = (q.better if (test.mean > 0) == q.higher_is_better else q.worse) if p < options.alpha \
            else "no verdict"
    return verdicts


def calibrate(setting: Setting, replicates: int, start: int = 0) -> dict[str, Count]:
    suites = suite_of(setting)
    regime = Regime("learners", setting.looks[-1], setting.seed_sd, setting.episode_sd, episodes=setting.episodes,
                    effect=setting.effect, diverging=setting.diverging)
    counts: dict[str, Count] = {}
    for number in range(start, start + replicates):
        stored, _ = replicate(regime, suites, number, {})
        runs = assemble(stored, suites)
        report = analyse(runs, suites, display=False)  # the report path: its rows carry the sequential verdicts
        rows = report.compared.to_dict("records")
        counts.setdefault("sequential (the report)", Count()).add(
            {(r["A"], r["B"]): r["verdict"] for r in rows}, setting, report.sequence.seeds_spent)
        questions, tests = dict(report.sequence.questions), list(report.sequence.tests)
        for n in setting.looks[len(tests):]:  # the looks the design did not need: for the naive and fixed ones
            found, at = questions_of(look(first_seeds(runs, n), suites), suites[0].grid.plan)
            for key, q in found.items():
                questions.setdefault(key, q)
            tests.append(at)
        pairs = {key: (key[1], key[2]) for key in questions}
        for name, naive in (("sequential (replayed)", False), ("naive: Holm at every look", True)):
            decisions, cells = _emulated(questions, tests, setting, suites, naive)
            counts.setdefault(name, Count()).add({pairs[k]: _verdict(d, *pairs[k]) for k, d in decisions.items()},
                                                 setting, cells)
        definitions = len({d for q in questions.values() for d in q.needs})
        for n, at in zip(setting.looks, tests):
            counts.setdefault(f"fixed, {n} seeds", Count()).add(
                {pairs[k]: v for k, v in _fixed(questions, at, suites).items()}, setting, definitions * n)
    return counts


def mc_half(rate: float, n: int) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / n) if n else math.nan


def rows(setting: Setting, counts: dict[str, Count]) -> list[dict]:
    out = []
    fixed_power = [(int(name.split()[1]), c.right / c.true_differences) for name, c in counts.items()
                   if name.startswith("fixed") and c.true_differences]
    for name, c in counts.items():
        n = c.replicates
        family = c.false_family / n
        power = c.right / c.true_differences if c.true_differences else math.nan
        row = {"setting": setting.name, "procedure": name, "replicates": n,
               "family-wise false verdicts": family,
               "bound (alpha + 3 MC SE)": ALPHA + mc_half(ALPHA, n),
               "within bound": family <= ALPHA + mc_half(ALPHA, n),
               "power": power,
               "equivalent when equal": c.equivalent_when_equal / c.equal if c.equal else math.nan,
               "mean cell runs": float(np.mean(c.cells))}
        if not name.startswith("fixed") and math.isfinite(power) and fixed_power:
            row["fixed design's cell runs at equal power"] = _equal_power(fixed_power, power, setting)
        out.append(row)
    return out


def _equal_power(fixed: list[tuple[int, float]], power: float, setting: Setting) -> str:
    """Cell runs of the fixed design whose power equals ``power``, interpolated between the looks' fixed designs."""
    definitions = len(LEARNERS)
    fixed = sorted(fixed)
    if power <= fixed[0][1]:
        return f"<= {fixed[0][0] * definitions}"
    for (n0, p0), (n1, p1) in zip(fixed, fixed[1:]):
        if p0 <= power <= p1 and p1 > p0:
            return f"{(n0 + (power - p0) / (p1 - p0) * (n1 - n0)) * definitions:.1f}"
    return f"> {fixed[-1][0] * definitions}"


SETTINGS = (Setting("no effect", 0.0), Setting("large effect (0.3)", 0.3), Setting("small effect (0.12)", 0.12),
            Setting("equivalence: no effect, margin 0.15", 0.0, margin=0.15),
            Setting("equivalence: effect at the margin (0.15)", 0.15, margin=0.15),
            Setting("no effect, Pocock-type", 0.0, design="pocock"),
            Setting("no effect, 4 looks (3, 5, 10, 20)", 0.0, looks=(3, 5, 10, 20)),
            Setting("large effect (0.3), Pocock-type, margin 0.15", 0.3, margin=0.15, design="pocock"),
            # about 5% of a cell's seeds hold a diverged episode: the comparisons reading one stop without a verdict
            Setting("no effect, 0.05% of episodes diverging", 0.0, diverging=0.0005),
            Setting("large effect (0.3), 0.05% of episodes diverging", 0.3, diverging=0.0005))
