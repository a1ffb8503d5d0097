"""Which comparison is decided at which look: group-sequential Holm over the report's comparisons.

Every look's tests are the report's own (``crossed_test``, ``levels_test``, the equivalence rule's shifted test),
made on the first n_k seeds. A comparison is

- *decided* when its repeated interval at look k, at the boundary's nominal level, lies wholly outside +-null (0 for
  a difference: the interval excludes 0; a published value's margin for "not reproduced");
- *equivalent* when the repeated interval at the nominal level of twice its share of alpha (two one-sided tests, as
  the fixed rule's 90% interval) lies inside +-margin;
- *diverged* when its test at a look holds diverged test episodes (its mean is not finite, or huge ones are kept in:
  the suite does not exclude them): no verdict, and no more seeds, since a later look holds the same seeds' episodes;
  it stays in the Holm family's count (conservative: it can never be rejected);
- else it *continues*; at the last look what is left has no verdict at the budget.

Multiplicity across the family (between learners, by test condition, ablation effects: the report's Holm family) is
the group-sequential Holm procedure (Ye, Li, Liu and Yao 2013; Maurer and Bretz 2013): with r hypotheses not
yet rejected, each is tested by the boundaries of the spending function at alpha / r; when one is rejected the
others' boundaries are recomputed at the larger alpha / (r - 1) and tested again on every look so far, until none
more is rejected. It is the closure of weighted Bonferroni group-sequential tests, so it holds the family-wise error
at alpha under interim looks, where Holm applied afresh to each look's p-values (``naive``) does not. Stopping a
comparison for equivalence only ever leaves a hypothesis unrejected (non-binding futility): the error stays held.
Published values are judged each at alpha on its own, as the fixed report's equivalence rule is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from scipy import stats

from bench.consumers.report.statistics import Test
from bench.consumers.sequential.boundaries import boundaries, nominal
from bench.spec.suite import SeedsPlan

DECIDED, EQUIVALENT, CONTINUE, BUDGET, UNTESTED = "decided", "equivalent", "continue", "no verdict at the budget", \
    "no test"
DIVERGED, DIVERGED_VERDICT = "diverged", "no verdict: diverged test episodes"


@dataclass(frozen=True)
class Question:
    """One comparison the design decides: the report's row it stands for and the cells it reads."""

    key: tuple  # the row's identity across looks
    kind: str  # the report's: algorithms, variants of one algorithm (either "by test condition: "), ablation, published
    title: str  # how the report names it
    family: bool  # in the Holm family (published values: each judged at alpha alone)
    null: float  # decided when the interval lies wholly outside +-null
    margin: float | None  # equivalent when the interval lies inside +-margin (None: never)
    better: str  # the verdict where the difference is positive in the score's good direction
    worse: str
    needs: frozenset[str]  # the cell definitions (configuration hashes less the seed) whose runs it reads
    higher_is_better: bool = True


@dataclass
class Seen:
    """One look at a question: its test, its statistic and the boundary it was held to."""

    look: int
    seeds: int
    test: Test
    z: float  # the test's p-value as a signed normal deviate (its position against the boundaries)
    boundary: float  # |z| the look's boundary at the question's level then (inf: none spent)


@dataclass
class Decision:
    state: str = CONTINUE
    verdict: str = ""
    look: int | None = None  # the look (0-based) that decided it
    seeds: int = 0  # seeds per arm when it stopped (or at the last look it was tested)
    interval: tuple[float, float] = (math.nan, math.nan)  # the repeated interval it stopped on
    boundary: float = math.nan  # |z| of the boundary it was decided at (the level then: Holm's share after rejections)
    seen: list[Seen] = field(default_factory=list)


def testable(test: Test | None, min_seeds: int) -> bool:
    return test is not None and test.seeds >= min_seeds and not diverged(test) and math.isfinite(test.se)


def diverged(test: Test | None) -> bool:
    """A test over diverged episodes: more seeds cannot mend it (the next look holds these seeds' episodes too)."""
    return test is not None and (test.diverged > 0 or not math.isfinite(test.mean))


def _interval(test: Test, level: float) -> tuple[float, float]:
    """The two-sided interval at nominal level ``level`` (0 where every seed and episode agree)."""
    half = 0.0 if test.se == 0 else test.half(1 - level)
    return test.mean - half, test.mean + half


def _outside(test: Test, level: float, null: float) -> bool:
    low, high = _interval(test, level)
    return low > null or high < -null


def _inside(test: Test, level: float, margin: float | None) -> bool:
    if margin is None:
        return False
    low, high = _interval(test, level)
    return -margin < low and high < margin


def _z(test: Test) -> float:
    if not math.isfinite(test.p):
        return math.nan
    return math.copysign(float(stats.norm.isf(max(test.p, 1e-300) / 2)), test.mean)


class Levels:
    """Each look's nominal level at a share of alpha, computed once per share (``naive``: the share itself at every
    look, as a fixed design tested at each look would)."""

    def __init__(self, plan: SeedsPlan, naive: bool = False):
        self.plan, self.naive = plan, naive

    def nominal(self, look: int, level: float) -> float:
        return level if self.naive else nominal(self.plan.looks, self.plan.design, level)[look]

    def boundary(self, look: int, level: float) -> float:
        return float(stats.norm.isf(level / 2)) if self.naive else boundaries(self.plan.looks, self.plan.design,
                                                                              level)[look]


def decide(questions: dict[tuple, Question], looks: list[dict[tuple, Test]], plan: SeedsPlan, alpha: float,
           min_seeds: int, naive: bool = False) -> dict[tuple, Decision]:
    """Every question's decision after ``looks`` (each look's tests by question key, on its first n_k seeds)."""
    levels = Levels(plan, naive)
    decisions = {key: Decision() for key in questions}
    family = [key for key, q in questions.items() if q.family and looks and testable(looks[0].get(key), min_seeds)]
    last = len(plan.looks) - 1
    for look, tests in enumerate(looks):
        open_family = [key for key in family if decisions[key].state != DECIDED]
        for key, question in questions.items():
            d, test = decisions[key], tests.get(key)
            if d.state == CONTINUE and test is not None:
                level = alpha / len(open_family) if key in open_family else alpha
                d.seen.append(Seen(look, plan.looks[look], test, _z(test), levels.boundary(look, level)))
                d.seeds = test.seeds
                if diverged(test):
                    d.state, d.verdict, d.look = DIVERGED, DIVERGED_VERDICT, look
        while True:  # group-sequential Holm: reject at alpha / r on any look so far, r shrinking as they fall
            open_family = [key for key in family if decisions[key].state != DECIDED]
            level = alpha / max(1, len(open_family))
            hit = next(((key, seen) for key in open_family if decisions[key].state == CONTINUE
                        for seen in [_crossing(decisions[key], questions[key], levels, level, look, min_seeds)]
                        if seen is not None), None)
            if hit is None:
                break
            key, seen = hit
            _stop(decisions[key], questions[key], DECIDED, look, levels.nominal(seen.look, level), seen)
        for key, question in questions.items():
            d = decisions[key]
            if d.state != CONTINUE or not d.seen or d.seen[-1].look != look or not testable(d.seen[-1].test,
                                                                                             min_seeds):
                continue
            level = alpha / max(1, len(open_family)) if key in family else alpha
            if not question.family and _outside(d.seen[-1].test, levels.nominal(look, level), question.null):
                _stop(d, question, DECIDED, look, levels.nominal(look, level))
            elif _inside(d.seen[-1].test, levels.nominal(look, min(1.0, 2 * level)), question.margin):
                _stop(d, question, EQUIVALENT, look, levels.nominal(look, min(1.0, 2 * level)))
        if look == last:
            for key, d in decisions.items():
                if d.state == CONTINUE:
                    d.state = BUDGET if d.seen and testable(d.seen[-1].test, min_seeds) else UNTESTED
                    if d.seen:
                        level = alpha / max(1, len(open_family)) if key in family else alpha
                        d.interval = _interval(d.seen[-1].test, levels.nominal(look, level))
    return decisions


def _crossing(d: Decision, question: Question, levels: Levels, level: float, look: int,
              min_seeds: int) -> Seen | None:
    """The first look so far (``naive``: this look alone) whose test crosses the boundary at ``level``."""
    seen = [s for s in d.seen if s.look == look] if levels.naive else d.seen
    return next((s for s in seen if testable(s.test, min_seeds)
                 and _outside(s.test, levels.nominal(s.look, level), question.null)), None)


def _stop(d: Decision, question: Question, state: str, look: int, level: float, seen: Seen | None = None) -> None:
    """Stop ``d`` at ``look`` on ``seen`` (default: this look's test), its interval at the nominal ``level``."""
    test = (seen or d.seen[-1]).test
    d.state, d.look, d.interval = state, look, _interval(test, level)
    d.boundary = float(stats.norm.isf(level / 2))
    if state == EQUIVALENT:
        d.verdict = "reproduced" if question.kind == "published" else f"equivalent (within ±{question.margin:g})"
    elif question.kind == "published":
        d.verdict = "not reproduced"
    else:
        d.verdict = question.better if (test.mean > 0) == question.higher_is_better else question.worse
