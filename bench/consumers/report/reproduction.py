"""Reproduced or not: one equivalence rule for every measured cell against a published value.

The margin is declared in advance per published series (``margin`` in ``bench/spec/data/published.yaml``; else
``published.DEFAULT_MARGINS`` by score). The difference measured - published is tested with the report's crossed
variance (training seeds and test episodes both samples: the test-task draw is shared by every seed, and a rerun of
the paper draws other tasks), the published interval folded in where there is one. Three outcomes:
- *reproduced*: the 90% interval of the difference lies inside ±margin (two one-sided tests at 5%);
- *not reproduced*: the 95% interval lies wholly outside ±margin;
- *inconclusive*: neither; the report says roughly how many seeds would decide it (or that more seeds cannot,
  where the test-episode draw alone is wider than the margin allows).
A verdict needs ``report.min_seeds`` seeds; diverged episodes in the mean leave no verdict (the one without them is
given beside).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.consumers.report.statistics import Aligned, Test, crossed_test, shifted
from bench.core import metrics as m
from bench.spec import published as papers
from bench.spec.suite import ReportOptions

@dataclass(frozen=True)
class Judged:
    measured: Test  # the measured mean's own test (seeds and test episodes)
    test: Test  # of measured - published (nan where no difference could be formed)
    margin: float
    verdict: str


NOTHING = Test(math.nan, math.nan, math.nan, 0, 0)
JUDGED = "judged"  # the column of ``columns`` that holds the Judged (for the sequential design; never printed)


def _seeds_to_decide(test: Test, margin: float, z: float, room: float) -> str:
    """Roughly how many seeds would shrink the interval's half-width to ``room``: the seed part of the variance
    shrinks with seeds, the test-episode part does not."""
    variance = test.se ** 2
    seed_part, episode_part = variance * (1 - test.episode_share), variance * test.episode_share
    spare = (room / z) ** 2 - episode_part
    if room <= 0 or spare <= 0:
        return ("more seeds cannot decide it: the test-episode draw alone is wider than the margin allows (more test "
                "episodes can)")
    return f"about {max(test.seeds + 1, math.ceil(seed_part * test.seeds / spare))} seeds would decide it"


def decide(test: Test, margin: float, min_seeds: int) -> str:
    """The equivalence verdict on ``test`` (of measured - published)."""
    if test.seeds < min_seeds:
        return f"inconclusive: {test.seeds} seed(s), {min_seeds} needed for a verdict"
    if not math.isfinite(test.mean):
        return "no verdict: the measured mean is not finite"
    if not math.isfinite(test.se):
        return "inconclusive: one seed gives no interval across seeds"
    if test.se == 0:
        return "reproduced" if abs(test.mean) < margin else "not reproduced"
    half90, half95 = test.half(0.90), test.half(0.95)
    if abs(test.mean) + half90 < margin:
        return "reproduced"
    if abs(test.mean) - half95 > margin:
        return "not reproduced"
    if abs(test.mean) < margin:  # towards reproduced: the 90% interval must fit in what is left of the margin
        return "inconclusive: " + _seeds_to_decide(test, margin, 1.645, margin - abs(test.mean))
    return "inconclusive: " + _seeds_to_decide(test, margin, 1.96, abs(test.mean) - margin)


def judge(scores: np.ndarray, paper: papers.Published, options: ReportOptions, why: list[str],
          diverged: int = 0) -> Judged:
    """``scores[s, e]``: the measured seeds x test episodes in the published unit (percent for accuracy)."""
    margin = paper.margin_value
    measured = crossed_test(scores) if scores.size else NOTHING
    if why:
        return Judged(measured, NOTHING, margin, "not comparable (" + "; ".join(why) + ")")
    if scores.size == 0:
        return Judged(measured, NOTHING, margin, "no verdict: nothing measured")
    if measured.seeds >= 2:
        test = shifted(measured, paper.value, (paper.ci95 or 0.0) / 1.96)
    else:
        test = Test(measured.mean - paper.value, math.nan, math.nan, measured.seeds, measured.episodes)
    verdict = decide(test, margin, options.min_seeds)
    if diverged:
        verdict = f"no verdict: {diverged} diverged episode score(s) in the mean"
    return Judged(measured, test, margin, verdict)


def _fixed(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "-"


def columns(kept: Aligned | None, paper: papers.Published, options: ReportOptions, why: list[str],
            without: Aligned | None = None) -> dict:
    """The published-results columns of one measured cell or condition: ``kept`` its seeds x episodes scores as the
    suite counts them, ``without`` the same with diverged episodes left out (shown beside a mean they dominate)."""
    scale = 1 / m.SCORES[paper.score].scale
    scores = kept.tables[0] * scale if kept is not None and kept.seeds else np.zeros((0, 0))
    diverged = kept.diverged if kept is not None else 0
    judged = judge(scores, paper, options, why, diverged)
    verdict = judged.verdict
    if diverged and without is not None and without.seeds and not why:
        clean = judge(without.tables[0] * scale, paper, options, why)
        verdict += f"; without them {clean.test.mean + paper.value:.3f}: {clean.verdict}"
    measured, test = judged.measured, judged.test
    half90 = test.half(0.90) if math.isfinite(test.se) else math.nan
    return {"seeds": measured.seeds, "episodes": measured.episodes,
            "measured": f"{_fixed(measured.mean, '.3f')} ± {_fixed(measured.half_width, '.3f')}",
            "published": f"{paper.value:g}" + (f" ± {paper.ci95:g}" if paper.ci95 else ""),
            "difference (90% CI)": f"{_fixed(test.mean, '+.3f')} [{_fixed(test.mean - half90, '+.3f')}, "
                                   f"{_fixed(test.mean + half90, '+.3f')}]",
            "margin": f"±{judged.margin:.3g}", "from the test-episode draw": share(test.episode_share),
            "diverged episodes": diverged, "verdict": verdict, "source": paper.citation,
            JUDGED: judged}


def share(share: float) -> str:
    """How much of the interval's variance comes from which test episodes were drawn."""
    return f"{share:.0%} of the variance" if math.isfinite(share) else "-"
