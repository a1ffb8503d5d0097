"""A sequential suite's looks, replayed from its stored runs: what each look decided and which cells come next.

The state of a sequential design is never stored: it is a function of the plan and the runs of seeds 0..n_k-1, so
the runner (which cells to run next), the report (where each comparison was decided) and the calibration (its error
rates) all replay it the same way, and an interrupted suite resumes at the look whose cells are not all finished.
Each look's tests are the report's own analysis (``report.analyse``) of the runs of the look's seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pandas as pd

from bench.consumers.report.loading import Runs, first_seeds
from bench.consumers.report.reproduction import JUDGED
from bench.consumers.report.statistics import Test
from bench.consumers.sequential.design import CONTINUE, DECIDED, Decision, Question, decide, testable
from bench.spec.suite import ABSENT, Cell, SeedsPlan, Suite


def definition(cell: Cell) -> str:
    """The cell's configuration less the seed: what the report's ``definition`` column holds."""
    return replace(cell, seed=0).config_hash


@dataclass
class Walk:
    plan: SeedsPlan
    questions: dict[tuple, Question]
    decisions: dict[tuple, Decision]
    looks_done: int  # looks whose every needed cell has finished (and were decided)
    needed: list[set[str]]  # per look reached: the definitions it runs seeds 0..n_k-1 of
    next_cells: list[Cell] = field(default_factory=list)  # the cells of the first look not done (empty: done)
    definitions: int = 0  # every definition of the suite: the fixed design's budget is definitions x looks[-1]
    reached: list[Cell] = field(default_factory=list)  # every cell of the looks reached (the one not done included)
    tests: list[dict] = field(default_factory=list)  # per look decided: its tests by question key

    @property
    def done(self) -> bool:
        return not self.next_cells

    @property
    def seeds_spent(self) -> int:
        """Cells run (or to run) by the looks reached."""
        return cell_runs(self.plan, self.needed)

    @property
    def fixed_budget(self) -> int:
        return self.definitions * self.plan.looks[-1]


def cell_runs(plan: SeedsPlan, needed: list[set[str]]) -> int:
    """Cells a design runs when look k needs the definitions ``needed[k]``: each its seeds up to its last look."""
    last = {d: plan.looks[look] for look, definitions in enumerate(needed) for d in definitions}
    return sum(last.values())


def still_needed(questions: dict[tuple, Question], decisions: dict[tuple, Decision]) -> set[str]:
    """The definitions an undecided question reads: those the next look gives seeds."""
    return set().union(*(questions[key].needs for key, d in decisions.items() if d.state == CONTINUE))


def _matching(runs: Runs, label: str, condition: dict[str, str]) -> set[str]:
    """Definitions of ``label``'s runs that agree with ``condition`` on every cell axis (or lack that option)."""
    f = runs.finished[runs.finished["learner"] == label]
    for axis, value in condition.items():
        if axis in f.columns and axis != "seed":
            f = f[(f[axis] == value) | (f[axis] == ABSENT)]
    return set(f["definition"])


def _where(row: dict, axes: list[str]) -> dict[str, str]:
    return {axis: str(row[axis]) for axis in axes if axis in row}


def _varying(runs: Runs, row: dict, axes: list[str]) -> str:
    shown = [f"{axis}={row[axis]}" for axis in axes if axis in row and axis in runs.varying()]
    return f" ({', '.join(shown)})" if shown else ""


def rows_of(analysis, plan: SeedsPlan):
    """Each row of the analysis a sequential design decides: (its frame, its index there, its question, its test)."""
    runs, higher = analysis.runs, analysis.runs.metric.higher_is_better
    cell_axes = runs.conditions
    for frame, view, axes in ((analysis.compared, "", cell_axes),
                              (analysis.compared_under, "by test condition: ",
                               analysis.under.conditions if analysis.under is not None else [])):
        for index, row in frame.iterrows() if not frame.empty else []:
            if row["unpaired"]:
                continue
            kind = view + row["kind"]  # between algorithms, or variants of one
            where = _where(row, axes)
            needs = _matching(runs, row["A"], _where(row, cell_axes)) | _matching(runs, row["B"],
                                                                                   _where(row, cell_axes))
            yield frame, index, Question(
                ("compare", row["A"], row["B"], tuple(where.items())), kind,
                f"{row['A']} vs {row['B']}" + _varying(runs, row, axes) + _test_condition(row, kind), True, 0.0,
                plan.equivalence_margin, row["better"], row["worse"], frozenset(needs), higher), row["test"]
    effects = analysis.effects
    for index, row in effects.iterrows() if not effects.empty else []:
        if row["unpaired"] or row["test"] is None:
            continue
        needs = set(runs.finished.loc[runs.finished["learner"] == row["learner"], "definition"])
        yield effects, index, Question(
            ("effect", row["learner"], row["kind"], row["component"], row["levels"], row["at"]), "ablation",
            f"{row['learner']}: {row['component']} {row['levels']}" + (f" at {row['at']}" if row["at"] else ""),
            True, 0.0, plan.equivalence_margin, row["better"], row["worse"], frozenset(needs), higher), row["test"]
    for frame, axes in ((analysis.published, cell_axes), (analysis.published_under, ["train K", "test K",
                                                                                     "test steps"])):
        for index, row in frame.iterrows() if not frame.empty else []:
            judged, where = row[JUDGED], _where(row, axes)
            if judged.verdict.startswith("not comparable") or not judged.test.seeds:  # no seeds can decide it
                continue
            needs = set(runs.finished.loc[runs.finished["learner"] == row["learner"], "definition"])
            yield frame, index, Question(
                ("published", row["learner"], tuple(where.items())), "published",
                f"{row['learner']} against {row['source']}" + "".join(f", {a} {v}" for a, v in where.items()),
                False, judged.margin, judged.margin, "not reproduced", "not reproduced", frozenset(needs),
                higher), judged.test


def questions_of(analysis, plan: SeedsPlan) -> tuple[dict[tuple, Question], dict[tuple, Test]]:
    """The comparisons a report of these runs makes, as questions, and their tests on these runs."""
    questions, tests = {}, {}
    for _, _, question, test in rows_of(analysis, plan):
        questions[question.key], tests[question.key] = question, test
    return questions, tests


def apply(state: Walk, analysis) -> None:
    """Give the analysis' rows the sequential verdicts, in place: a decided row its verdict and the test it was
    decided on (on the seeds of its look; no fixed-design p-value), an undecided one where it stands."""
    for frame, index, question, _ in list(rows_of(analysis, state.plan)):
        d = state.decisions.get(question.key)
        if d is None:
            continue
        if d.state == CONTINUE:
            verdict = f"continues: undecided at look {state.looks_done} of {len(state.plan.looks)}"
        else:
            verdict = d.verdict or d.state
        frame.at[index, "verdict"] = verdict
        stopped = next((seen for seen in d.seen if d.look is not None and seen.look == d.look), None)
        if "test" in frame.columns and stopped is not None:
            frame.at[index, "test"] = stopped.test
        if "p_holm" in frame.columns:
            frame.at[index, "p_holm"] = math.nan


def _test_condition(row: dict, kind: str) -> str:
    if not kind.startswith("by test condition"):
        return ""
    return f", test K {row.get('test_k_shot', '-')}, {row.get('test_steps', '-')} steps"


def walk(runs: Runs | None, suites: list[Suite], analyse, naive: bool = False) -> Walk:
    """Replay the looks of ``suites``' plan on ``runs`` (None: nothing stored yet) as far as their cells have
    finished. ``analyse(runs, suites)``: the report's analysis of one look (``report.look``; passed in, as the report
    replays its looks through this module)."""
    plan, options = suites[0].grid.plan, suites[0].report
    cells = [cell for suite in suites for cell in suite.cells]
    every = list(dict.fromkeys(definition(cell) for cell in cells))
    finished = set(runs.finished["config_hash"]) if runs is not None else set()
    needed, looks, questions, state = set(every), [], {}, Walk(plan, {}, {}, 0, [], definitions=len(every))
    reached: dict[str, Cell] = {}
    for look, seeds in enumerate(plan.looks):
        look_cells = [cell for cell in cells if definition(cell) in needed and cell.seed < seeds]
        state.needed.append(set(needed))
        reached.update((cell.config_hash, cell) for cell in look_cells)
        state.reached = list(reached.values())
        if any(cell.config_hash not in finished for cell in look_cells):
            state.next_cells = [cell for cell in look_cells if cell.config_hash not in finished]
            return state
        analysis = analyse(first_seeds(runs, seeds), suites)
        found, tests = questions_of(analysis, plan)
        for key, question in found.items():
            questions.setdefault(key, question)
        looks.append(tests)
        state.questions, state.tests = questions, looks
        state.decisions = decide(questions, looks, plan, options.alpha, options.min_seeds, naive)
        state.looks_done = look + 1
        needed = still_needed(questions, state.decisions)
        if not needed:
            break
    return state


def table(state: Walk) -> pd.DataFrame:
    """Per comparison: where it was decided, on how many seeds, its verdict, statistic and boundary."""
    rows = []
    for key, question in state.questions.items():
        d = state.decisions[key]
        last = d.seen[-1] if d.seen else None
        rows.append({"comparison": question.title, "kind": question.kind,
                     "decided at look": "-" if d.look is None else f"{d.look + 1} ({state.plan.looks[d.look]} seeds)",
                     "seeds": d.seeds, "state": d.state, "verdict": d.verdict or d.state,
                     "difference": f"{last.test.mean:+.4g}" if last else "-",
                     "repeated interval": f"[{d.interval[0]:+.4g}, {d.interval[1]:+.4g}]"
                     if math.isfinite(d.interval[0]) else "-",
                     "statistic (abs z)": f"{abs(last.z):.2f}" if last and last.z == last.z else "-",
                     "boundary (abs z)": f"{d.boundary if d.state == DECIDED else last.boundary:.2f}"
                     if last and question.family else "-"})
    return pd.DataFrame(rows)


__all__ = ["Walk", "walk", "table", "questions_of", "apply", "definition", "testable", "cell_runs", "still_needed"]
