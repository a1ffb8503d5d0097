"""`bench report`: the comparison report of a suite, built from what MLflow holds and nothing else.

Writes reports/<suite>/report.md, a self-contained report.html (figures embedded), the figures as PNG and the tables
as CSV. It covers the cells of the suite as it stands now (the file given, or the one the latest invocation logged);
runs of other definitions are counted, never mixed in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.core import paths
from bench.store import tracking
from bench.consumers.report import ablations, conclusions, conditions, figures, render, tables
from bench.consumers.report.loading import Runs, load_runs, logged_suites
from bench.consumers.report.reproduction import JUDGED
from bench.consumers.sequential.boundaries import boundaries
from bench.consumers.report.statistics import METHOD, comparisons, decide, representatives
from bench.spec.suite import ReportOptions, Suite

__all__ = ["build_report", "build_reports", "logged_suites"]


def _dataset_lines(statistics: dict) -> tuple[str, ...]:
    """The dataset's statistics as a short list: one line per split instead of a JSON dump."""
    lines = []
    for key, value in statistics.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in value.items())
        lines.append(f"{key}: {value}")
    return tuple(lines)


def _header(runs: Runs) -> list[render.Block]:
    h = runs.header
    items = [f"generated: {h['generated']}", f"git commit(s): {h['git commits']}", f"torch: {h['torch']}",
             f"devices: {h['devices']}",
             "data: " + (", ".join(h["data identities"]) or "- (runs of versions that did not record it)")]
    if len(h["data identities"]) > 1:
        items.append("WARNING: the runs read more than one version of the data (its files were replaced, or its "
                     "options differ between learners); runs pair only where their evaluation fingerprints, which "
                     "hold the data identity, agree")
    if h["mixed code"]:
        items.append("WARNING: runs made by more than one code version (--reuse-other-code) for: "
                     + ", ".join(h["mixed code"]) + "; see the code identity and trained-by columns of the per-run table")
    if h["code versions"]:
        items.append("WARNING: the runs compared were made at more than one commit or by more than one code "
                     "version (a cell is reused while its code identity is unchanged, or whatever it is under "
                     "--reuse-other-code); runs pair only where their evaluation fingerprints agree. Code by learner: "
                     + "; ".join(h["code versions"]))
    if h["environments"]:
        items.append("WARNING: the runs were timed in more than one execution environment; times and memory are "
                     "comparable only within one (scores are not affected). Environment by learner: "
                     + "; ".join(h["environments"]))
    if h["plugins"]:
        items.append("learners from outside this repository: " + "; ".join(h["plugins"]))
    if h["plugin datasets"]:
        items.append("dataset from outside this repository: " + "; ".join(h["plugin datasets"]))
    if h["settings between learners"]:
        items.append("settings that differ between learners (each learner's own, as in a tuned suite: compared with "
                     "it): " + "; ".join(h["settings between learners"]))
    return [render.Items(tuple(items)), render.Heading("Dataset"), render.Items(_dataset_lines(h["dataset"]))]


PUBLISHED_RULE = ("Measured (mean ± 95% interval over seeds and test episodes) against the published value, by one "
                 "equivalence rule with a margin declared in advance per published series: reproduced when the 90% "
                 "interval of measured - published lies inside ±margin (two one-sided tests at 5%), not reproduced "
                 "when its 95% interval lies wholly outside, else inconclusive (with roughly how many seeds would "
                 "decide). The published interval, where there is one, is folded in; 'from the test-episode draw' is "
                 "the part of the difference's variance that comes from which test episodes were drawn (more seeds do "
                 "not shrink it). Not comparable when the data or a protocol setting the paper fixes differs "
                 "(listed).")


def _with_p(tested: pd.DataFrame) -> int:
    """How many of ``tested`` entered the Holm family (those with an adjusted p-value)."""
    return int(tested["p_holm"].notna().sum()) if not tested.empty else 0


def _family(counts: dict[str, int]) -> str:
    parts = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    return (f"Holm family: {sum(counts.values())} tests, every p-value of this report that can give a verdict"
            + (f" ({parts})." if parts else "."))


def _comparison_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    runs, frames, options, family = a.runs, a.frames, a.options, a.family
    grouped = {}
    for label, stand_in in representatives(runs).items():
        grouped.setdefault(stand_in, []).append(label)
    groups = [f"{', '.join(labels)} (as {stand_in})" for stand_in, labels in grouped.items() if len(labels) > 1]
    note = ("Implementation variants of one algorithm are grouped: " + "; ".join(groups) + "." if groups and
            not options.reference else "")
    method = METHOD.format(min_seeds=options.min_seeds, alpha=options.alpha) if a.sequence is None else (
        "The tests are the fixed design's (seeds x episodes, crossed variance), each shown on the seeds of the look "
        "that decided it; the verdicts are the sequential design's (above), not Holm's on every seed held.")
    return [render.Heading("Comparisons"), render.Text(method),
            render.Text(family),
            render.Heading("Between algorithms", 3), *([render.Text(note)] if note else []),
            render.Table(frames["comparisons"]),
            render.Heading("Between implementation variants of one algorithm", 3),
            render.Text("Variants compute the same meta-gradient (bench verify: float64 agreement); in float32 "
                        "their training runs drift apart by rounding, so a difference here is a verdict on "
                        "rounding only where it recurs across seeds."),
            render.Table(frames["variant_comparisons"])]


def _condition_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    if a.under is None:
        return []
    frames, diverged, evaluation, published = a.frames, a.diverged, a.evaluation, bool(a.options.published)
    excluded = "left out of the means" if evaluation.exclude_diverged else "kept in the means (exclude_diverged: false)"
    blocks = [render.Heading("Test conditions"),
              render.Text("One trained model per run, scored under every test support size K and test-time step "
                          "count the suite names (no retraining); per condition, the mean score with its 95% interval "
                          "over seeds and test episodes (both samples), and how much of it the test-episode draw "
                          "makes. An episode is diverged when its score is non-finite or its error above "
                          f"{evaluation.divergence_factor:g} times the dataset's stated error of predicting 0 (else "
                          f"the episode's own error before adaptation); diverged episodes are {excluded}."),
              render.Table(frames["test_conditions"]),
              render.Heading("Comparisons by test condition", 3),
              render.Text("The comparisons above, under every other named test condition (learners pair only under "
                          "the same test K and step count, on the same episodes; the primary condition is compared "
                          "above, once; Holm's correction covers every condition)."),
              render.Table(frames["comparisons_by_test_condition"]),
              render.Heading("Diverged test episodes", 3),
              render.Text(f"{diverged} diverged episode(s) under the named conditions"
                          + (f"; the first {len(frames['diverged_episodes'])} listed." if diverged > len(
                              frames["diverged_episodes"]) else ".")),
              render.Table(frames["diverged_episodes"])]
    if published:
        blocks += [render.Heading("Against published results, by test condition", 3),
                   render.Text(PUBLISHED_RULE),
                   render.Table(frames["published_test_conditions"])]
    return blocks


def _ablation_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    """Per learner with effects: its ablation table and forest figure."""
    runs, effects, table, notes = a.runs, a.effects, a.frames["ablations"], a.notes
    if table.empty and not notes:
        return []
    blocks = [render.Heading("Ablations"),
              render.Text("Within each learner, every value of every swept axis against the axis's baseline (the "
                          "first value the suite lists, or report.baselines), at every setting of the other axes; "
                          "where options are crossed, each option's main effect and each two-way interaction. "
                          + ablations.MODEL + " Costs beside each effect: the baseline's and the level's median time "
                          "per meta-iteration and saved-for-backward bytes (means over their runs), and their "
                          "ratio; interactions and test-time axes (one trained model) have none. Saved-for-backward "
                          "bytes are counted in the warm-up meta-iterations, at the start of training: an option that "
                          "changes with the epoch (first_order_epochs, the multi-step loss's annealing) shows its "
                          "first epoch's. Intervals are each test's own; verdicts follow the Holm-adjusted p-values, "
                          "so an interval that excludes 0 may still be \"no evidence\" once the family is accounted "
                          "for.")]
    if notes:
        blocks.append(render.Items(tuple(notes)))
    for label in dict.fromkeys(table["learner"]):
        title, path = figures.ablation_forest(runs, label, effects, folder)
        blocks += [render.Heading(label, 3), render.Table(table[table["learner"] == label].drop(columns="learner")),
                   render.Image(title, path)]
    return blocks


@dataclass
class Analysis:
    """Every verdict and table of a report, computed from its runs alone (no store, no files): what ``build_report``
    writes and what the calibration (bench.consumers.calibration) checks against simulated truth."""

    suites: list[Suite]
    runs: Runs
    under: Runs | None  # the runs with the test conditions as axes (suites that name test conditions)
    compared: pd.DataFrame
    compared_under: pd.DataFrame
    effects: pd.DataFrame
    notes: list[str]
    family: str
    frames: dict[str, pd.DataFrame]
    diverged: int
    # each published row with its Judged (reproduction.JUDGED): what the sequential design decides on
    published: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    published_under: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    sequence: object = None  # a sequential suite's replayed looks (bench.consumers.sequential.walk.Walk)

    @property
    def options(self) -> ReportOptions:
        return self.suites[0].report

    @property
    def evaluation(self):
        return self.suites[0].evaluation


def analyse(runs: Runs, suites: list[Suite], sequential: bool = True, display: bool = True) -> Analysis:
    """The report's statistics: every test in one Holm family (between learners, by test condition, ablation
    effects), and every table. A suite whose seeds are a plan has its verdicts from its looks (``sequential``
    False: as a fixed design of every seed it holds, what each look is). ``display`` False: the tests alone, without
    the tables that only show them (a look of a sequential design)."""
    options, evaluation = suites[0].report, suites[0].evaluation
    tested = not runs.condition_scores.empty and bool(evaluation.k_shot or evaluation.steps_list)
    under = conditions.as_axes(runs, evaluation) if tested else None
    compared = comparisons(runs, options)
    compared_under = comparisons(under, options) if tested else pd.DataFrame()
    factorial, notes = ablations.factorial_effects(runs, options)
    effects = pd.concat([ablations.simple_effects(runs, options), factorial] + (
        [ablations.simple_effects(under, options, test_view=True)] if tested else []), ignore_index=True)
    decide([compared, compared_under, effects], options, runs.metric)
    family = _family({"between learners": _with_p(compared), "by test condition": _with_p(compared_under),
                      "ablation effects": _with_p(effects)})
    published = tables.against_published(runs, options)
    published_under = conditions.against_published(runs, under, options) if tested else pd.DataFrame()
    a = Analysis(suites, runs, under, compared, compared_under, effects, notes, family, {}, 0, published,
                 published_under)
    if sequential and suites[0].grid.plan is not None:  # before the tables: they show the looks' verdicts
        _sequential_verdicts(a)
    a.frames["published"] = published.drop(columns=JUDGED, errors="ignore")
    if tested:
        a.frames["published_test_conditions"] = published_under.drop(columns=JUDGED, errors="ignore")
    if display:
        _display_tables(a)
    return a


def _display_tables(a: Analysis) -> None:
    """The tables that show the tests (not needed by a look of a sequential design)."""
    runs, compared, evaluation = a.runs, a.compared, a.evaluation
    a.frames.update({"results": tables.results(runs), "runs": tables.per_run(runs),
                     "comparisons": tables.verdicts(runs, compared, "algorithms"),
                     "variant_comparisons": tables.verdicts(runs, compared, "variants of one algorithm"),
                     "ablations": tables.ablations(runs, a.effects),
                     "failed_and_skipped": tables.problems(runs), "other_definitions": tables.other_definitions(runs),
                     "time": tables.time_spent(runs)})
    if a.under is not None:
        a.frames["test_conditions"] = conditions.table(runs, a.under)
        a.frames["comparisons_by_test_condition"] = tables.verdicts(a.under, a.compared_under, "algorithms")
        a.frames["diverged_episodes"], a.diverged = conditions.diverged_episodes(runs, evaluation)
    if a.sequence is not None:
        from bench.consumers.sequential import walk  # noqa: PLC0415

        a.frames["sequential"] = walk.table(a.sequence)


def look(runs: Runs, suites: list[Suite]) -> Analysis:
    """One look of a sequential design: the tests of a fixed design on the runs given, without the display tables."""
    return analyse(runs, suites, sequential=False, display=False)


def _sequential_verdicts(a: Analysis) -> None:
    """The verdicts of a sequential suite: each comparison's at the look that decided it (bench.consumers.sequential),
    in the rows every table is built from."""
    from bench.consumers.sequential import walk  # noqa: PLC0415  (it replays looks through ``analyse``)

    a.sequence = walk.walk(a.runs, a.suites, look)
    walk.apply(a.sequence, a)
    a.family = ("Sequential design: verdicts are made look by look (group-sequential Holm over the comparisons "
                "between learners and the ablation effects; published values each at alpha), see 'Sequential "
                "design' below.")


def _title_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    concluded = conclusions.lines(a.runs, a.compared, a.compared_under, a.effects, a.frames["ablations"])
    return [render.Heading(f"meta-bench report: {a.suites[0].suite}", 1),
            *([render.Heading("Conclusions"), render.Items(concluded)] if concluded else []), *_header(a.runs)]


def _sequential_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    """Where each comparison of a sequential suite was decided, the boundaries, and the seeds spent."""
    if a.sequence is None:
        return []
    from bench.consumers.sequential.boundaries import spent  # noqa: PLC0415

    state, options = a.sequence, a.options
    plan, family = state.plan, sum(q.family for q in state.questions.values())
    share = options.alpha / max(1, family)
    looks = pd.DataFrame([{"look": i + 1, "seeds": n, "information": f"{n / plan.looks[-1]:.2f}",
                           "alpha spent (cumulative)": f"{spent(plan.design, n / plan.looks[-1], options.alpha):.4f}",
                           "boundary (abs z) at alpha": f"{boundaries(plan.looks, plan.design, options.alpha)[i]:.3f}",
                           f"boundary at alpha / {family} (Holm's first step)":
                               f"{boundaries(plan.looks, plan.design, share)[i]:.3f}",
                           "definitions run": len(state.needed[i]) if i < len(state.needed) else 0}
                          for i, n in enumerate(plan.looks)])
    status = (f"done after look {state.looks_done}" if state.done else
              f"in progress: look {len(state.needed)} has {len(state.next_cells)} cell(s) without a finished run")
    blocks = [render.Heading("Sequential design"),
              render.Text(f"Seeds as a group-sequential plan: looks at {', '.join(map(str, plan.looks))} seeds, "
                          f"{plan.design} alpha spending (Lan-DeMets), alpha {options.alpha:g}"
                          + (f", equivalence margin ±{plan.equivalence_margin:g}" if plan.equivalence_margin else "")
                          + f"; {status}. At each look every comparison is decided when its repeated interval (at "
                          "the look's nominal level) excludes 0, equivalent when the interval at twice that level "
                          "lies inside the margin, else it continues; only the cells an undecided comparison reads "
                          "get the next look's seeds. The family (comparisons between learners, by test condition, "
                          "ablation effects) is held at alpha by group-sequential Holm: with r undecided, each is "
                          "tested at alpha / r on every look so far. Published values are judged each at alpha, "
                          "reproduced when the interval lies inside their margin, not reproduced when wholly "
                          "outside. Calibrated by simulation: docs/measurements/sequential_calibration.md."),
              render.Text(f"Cell runs: {state.seeds_spent} of the fixed design's {state.fixed_budget} "
                          f"({state.definitions} definitions x {plan.looks[-1]} seeds)."),
              render.Table(looks), render.Table(a.frames["sequential"])]
    title, path = figures.sequential_looks(state, folder)
    return blocks + [render.Image(title, path)]


def _results_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    return [render.Heading("Results"), render.Table(a.frames["results"])]


def _published_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    if not a.options.published:
        return []
    return [render.Heading("Against published results"), render.Text(PUBLISHED_RULE),
            render.Table(a.frames["published"])]


def _figure_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    made = figures.all_figures(a.runs, folder)
    points = conditions.curves(a.runs, a.evaluation) if a.under is not None else None
    if points is not None and not points.empty:
        made.append(figures.adaptation_curves(a.runs, points, folder))
    blocks: list[render.Block] = [render.Heading("Figures")]
    for title, path in made:
        blocks += [render.Heading(title, 3), render.Image(title, path)]
    return blocks


def _time_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    if a.frames["time"].empty:
        return []
    return [render.Heading("Where the time went"),
            render.Text("Per learner, the mean seconds of each phase of a cell (its share of the cell's wall-clock): "
                        "set-up and data, autotuning, drawing episodes, the meta-iterations, the loop's work between "
                        "them, curves written as they come, validation, test, the rest, and the final store writes. "
                        "Every interval of a cell is one phase's, so they add up to its wall-clock; 'unaccounted' is "
                        "what they miss (seconds)."),
            render.Table(a.frames["time"])]


def _run_blocks(a: Analysis, folder: Path) -> list[render.Block]:
    return [render.Heading("Every run"), render.Table(a.frames["runs"]),
            render.Heading("Failed and skipped cells"), render.Table(a.frames["failed_and_skipped"]),
            render.Heading("Runs of other suite definitions (not included)"),
            render.Text("Runs in this experiment that match no cell of the suite as it stands now (an option, "
                        "the evaluation or the grid changed since, or made by an older harness)."),
            render.Table(a.frames["other_definitions"])]


# the report's sections in order: each turns the analysis into its blocks (none where it does not apply); a new
# section is one function here and its place in this list
SECTIONS = (_title_blocks, _results_blocks, _sequential_blocks, _comparison_blocks, _condition_blocks,
            _ablation_blocks, _published_blocks, _figure_blocks, _time_blocks, _run_blocks)


def build_reports(suites: list[Suite], uri_flag: str | None) -> list[Path]:
    """One report per suite name among ``suites`` (the documents of one file share a name and a report), each from
    the store its suite names (``uri_flag``: the command line's, which wins)."""
    reports = []
    for name in dict.fromkeys(s.suite for s in suites):
        named = [s for s in suites if s.suite == name]
        reports.append(build_report(name, tracking.resolve_uri(named[0].tracking.uri, uri_flag), named))
    return reports


def build_report(suite: str, uri: str, suites: list[Suite] | None = None) -> Path:
    """``suites``: the suite documents named ``suite`` as they stand now; None: those logged with the runs."""
    client = tracking.client_for(uri)
    suites = suites or logged_suites(client, suite)
    analysis = analyse(load_runs(client, suites), suites)
    folder = Path(analysis.options.output_dir)
    folder = (folder if folder.is_absolute() else paths.WORK_ROOT / folder) / suite
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in analysis.frames.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    blocks = [block for section in SECTIONS for block in section(analysis, folder)]
    (folder / "report.md").write_text(render.markdown(blocks), encoding="utf-8")
    (folder / "report.html").write_text(render.page(f"meta-bench: {suite}", blocks), encoding="utf-8")
    return folder / "report.md"
