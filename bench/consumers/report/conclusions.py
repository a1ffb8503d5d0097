"""The report's first lines: what its tables conclude, in words, so that nobody has to read three tables to learn
which learner wins. Nothing here is computed anew: the means are the runs' scores and the verdicts are the report's
own (seed-level tests, Holm-adjusted over the one family)."""
from __future__ import annotations

import math

import pandas as pd

from bench.consumers.report.loading import Runs
from bench.consumers.report.statistics import seed_interval
from bench.core import metrics as m
from bench.run.test_time import EXPLOSION_FACTOR, exploded
from bench.spec.suite import ABSENT

DECIDED = ("helps", "hurts", "stronger together", "weaker together")
SHOWN = 6  # effects with a verdict named in the conclusions; the rest are counted


def _mean(runs: Runs, learner: str, condition: dict[str, str]) -> float:
    f = runs.finished
    mine = f[f["learner"] == learner]
    for axis, value in condition.items():
        mine = mine[(mine[axis] == value) | (mine[axis] == ABSENT)]
    # over every seed: a seed without a finite score leaves the mean undefined, as in the results table (pandas
    # would average the seeds left, a number no table shows)
    return float(mine[m.SCORES[runs.score].name].mean(skipna=False))


def _between_learners(runs: Runs, compared: pd.DataFrame) -> list[str]:
    if compared.empty:
        return []
    score = m.SCORES[runs.score]
    varying = [a for a in runs.conditions if compared[a].nunique() > 1]
    lines = []
    for key, part in compared.groupby(runs.conditions, sort=False):
        condition = dict(zip(runs.conditions, key))
        learners = list(dict.fromkeys([*part["A"], *part["B"]]))
        means = {learner: _mean(runs, learner, condition) for learner in learners}
        unscored = [learner for learner, mean in means.items() if not math.isfinite(mean)]
        means = {learner: mean for learner, mean in means.items() if math.isfinite(mean)}
        where = ", ".join(f"{a}={condition[a]}" for a in varying)
        said = f"{', '.join(unscored)}: no finite mean {score.label} (non-finite test scores: see the diverged " \
               f"episodes and the results table)" if unscored else ""
        if not means:
            lines.append(f"{where + ': ' if where else ''}{said}")
            continue
        best = (max if score.direction == "higher" else min)(means, key=means.get)
        mine = part[(part["A"] == best) | (part["B"] == best)]
        other = [b if a == best else a for a, b in zip(mine["A"], mine["B"])]
        beaten = [o for o, verdict in zip(other, mine["verdict"]) if verdict == f"{best} better"]
        same = [o for o, verdict in zip(other, mine["verdict"]) if verdict.startswith("equivalent")]  # sequential
        open_ = [o for o, verdict in zip(other, mine["verdict"]) if not verdict.endswith(" better") and o not in same]
        among = " of those with a finite mean" if unscored else ""
        line = (f"{where + ': ' if where else ''}{best} scores best{among} ({score.label} "
                f"{score.format(means[best])}{score.unit}); "
                + (f"better than {', '.join(beaten)} (seed-level verdicts)" if beaten else "no verdict that it is "
                   "better than any other"))
        if same:
            line += f"; equivalent to {', '.join(same)} (inside the equivalence margin)"
        if (beaten or same) and open_:
            line += f"; no verdict against {', '.join(open_)}"
        lines.append(line + (f"; {said}" if said else ""))
    return lines


def _ablations(effects: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    if effects.empty:
        return []
    decided = table[table["verdict"].isin(DECIDED)]
    found = [f"{r['learner']}: {r['component']} {r['levels']} {r['verdict']} ({r['difference']}, {r['effect']}"
             + (f" at {r['at']})" if r["at"] != "-" else ")") for r in decided.to_dict("records")]
    shown = found[:SHOWN] + ([f"{len(found) - SHOWN} more in the ablation tables"] if len(found) > SHOWN else [])
    return [f"ablations: {len(decided)} of {len(table)} effects have a verdict"
            + (": " + "; ".join(shown) if found else " (more seeds narrow the intervals)")]


def _by_test_condition(compared_under: pd.DataFrame) -> list[str]:
    """How the comparisons under the named test conditions came out, counted."""
    if compared_under.empty:
        return []
    counts = compared_under["verdict"].map(lambda v: v if v.endswith(" better") else "no verdict").value_counts()
    return ["by test condition (" + f"{len(compared_under)} comparisons): "
            + ", ".join(f"{verdict} in {n}" for verdict, n in counts.items())]


def _training(runs: Runs) -> list[str]:
    """Where the budget shows in the validation curves (mean over seeds, per learner and definition): a curve whose
    end is worse than its best by more than the across-seed interval at the end fell (past its best at this
    budget); one whose last point beats the one before by more than that interval is still rising (undertrained)."""
    if runs.curves.empty:
        return []
    score = m.SCORES[runs.score]
    better = 1.0 if score.direction == "higher" else -1.0
    curves = runs.curves.merge(runs.finished[["run_id", "learner", "definition"]], on="run_id")
    found = []
    for (learner, _), part in curves.groupby(["learner", "definition"], sort=False):
        by_step = part.groupby("iteration")["val_score"]
        mean = by_step.mean()
        if len(mean) < 3:
            continue
        _, half = seed_interval(list(part[part["iteration"] == mean.index[-1]]["val_score"]))
        half = 0.0 if math.isnan(half) else half  # one seed: the point estimates alone
        where = "" if runs.finished["definition"].nunique() == runs.finished["learner"].nunique() else \
            " (" + ", ".join(f"{a}={v}" for a, v in _condition(runs, part["run_id"].iloc[0]).items()) + ")"
        best_at = (mean * better).idxmax()
        shown = {i: f"{score.format(mean[i])}{score.unit}" for i in (best_at, mean.index[-2], mean.index[-1])}
        if better * (mean[best_at] - mean.iloc[-1]) > half:
            found.append(f"{learner}{where}: validation score fell from {shown[best_at]} (iteration {best_at}) to "
                         f"{shown[mean.index[-1]]} at the end (iteration {mean.index[-1]}): past its best at this budget")
        elif better * (mean.iloc[-1] - mean.iloc[-2]) > half:
            found.append(f"{learner}{where}: validation score still rising at the end ({shown[mean.index[-2]]} to "
                         f"{shown[mean.index[-1]]}): undertrained at this budget")
    return found


def _exploded(runs: Runs) -> list[str]:
    """Regression runs whose test error is far above predicting 0 everywhere: they did not learn, whatever the
    comparisons say (the dataset's statistics give that error: zero_prediction_mse)."""
    reference = runs.header["dataset"].get("zero_prediction_mse")
    score = m.SCORES[runs.score]
    found = [row for row in runs.finished.to_dict("records") if exploded(score, row[score.name], reference)]
    return [f"EXPLODED: {row['learner']} ({', '.join(f'{a}={v}' for a, v in _condition(runs, row['run_id']).items())}"
            f"{', ' if runs.varying() else ''}seed {row['seed']}): {score.label} {_value(score, row[score.name])}, "
            f"non-finite or above {EXPLOSION_FACTOR:g} times the error of predicting 0 ({reference})" for row in found]


def _value(score: m.Metric, value: float) -> str:
    return score.format(value) if math.isfinite(value) else str(value)  # inf and nan said as such, not "-"


def _condition(runs: Runs, run_id: str) -> dict[str, str]:
    row = runs.finished[runs.finished["run_id"] == run_id].iloc[0]
    return {a: row[a] for a in runs.varying() if row[a] != ABSENT}


def lines(runs: Runs, compared: pd.DataFrame, compared_under: pd.DataFrame, effects: pd.DataFrame,
          table: pd.DataFrame) -> tuple[str, ...]:
    """One line per condition where learners are compared, one for the test conditions, one for the ablations, one
    per learner whose validation curve says something about the training budget."""
    algorithms = compared[compared["kind"] == "algorithms"] if not compared.empty else compared
    return tuple(_exploded(runs) + _between_learners(runs, algorithms) + _by_test_condition(compared_under)
                 + _ablations(effects, table) + _training(runs))
