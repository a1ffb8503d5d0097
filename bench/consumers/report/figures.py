"""The report's figures, one function each; only what the runs hold is drawn. Seeds are aggregated (mean, and the
95% t interval across seeds; the tables also count the test-episode draw), every other axis that varies stays apart in the series' names.
Scores are shown in the tables' unit (accuracy in %)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.consumers.report.loading import Runs  # noqa: E402
from bench.consumers.report.statistics import seed_interval  # noqa: E402
from bench.core import metrics as m  # noqa: E402
from bench.spec.suite import ABSENT  # noqa: E402

Figure = tuple[str, Path]  # title, PNG file
INTERVAL = "mean ± 95% t interval across seeds (the tables add the test-episode draw)"


def across_seeds(values) -> tuple[float, float]:
    """The tables' interval (statistics.seed_interval) for seaborn's error bars and bands."""
    mean, half = seed_interval(list(values))
    return (mean, mean) if math.isnan(half) else (mean - half, mean + half)  # one seed: no interval
PANELS = ("n_way", "k_shot", "device")  # one panel per combination that the runs hold


def palette(labels) -> dict[str, tuple]:
    """One colour per learner, the same in every figure of every report: registered learners take fixed slots,
    other labels the slots after them."""
    from meta_bench.algorithms import LEARNERS  # noqa: PLC0415

    order = LEARNERS.names() + sorted(set(labels) - set(LEARNERS.names()))
    # tab10, then tab20's light shades of the same hues: 20 distinct colours before any repeats
    colours = sns.color_palette("tab10", n_colors=10) + sns.color_palette("tab20", n_colors=20)[1::2]
    return {name: colours[i % len(colours)] for i, name in enumerate(order)}


def _save(fig, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _with_series(runs: Runs, exclude: tuple[str, ...] = ()) -> tuple[pd.DataFrame, list[str]]:
    """Finished runs with ``series``: the learner plus every varying option axis (not the panels, not ``exclude``),
    so that runs of different option values are never averaged together."""
    f = runs.finished.copy()
    apart = [a for a in runs.varying(exclude=exclude + PANELS)]
    f["series"] = [" ".join([row["learner"]] + [f"{a}={row[a]}" for a in apart if row[a] != ABSENT])
                   for _, row in f.iterrows()]
    f["panel"] = [", ".join(f"{a}={row[a]}" for a in PANELS if a not in exclude) for _, row in f.iterrows()]
    return f, sorted(f["panel"].unique())


def _series_palette(frame: pd.DataFrame) -> dict[str, tuple]:
    colours = palette(frame["learner"])
    return {series: colours[learner] for series, learner in zip(frame["series"], frame["learner"])}


def _shown(runs: Runs, values):
    """Scores in the tables' unit: accuracy in %, MSE as it is."""
    return values / runs.metric.scale


def _finite_only(part: pd.DataFrame, by: list[str], column: str, ax) -> pd.DataFrame:
    """``part`` less the groups (a bar, a point of a line) with a value that is not finite, each named on the axes.
    Seaborn drops non-finite values before averaging: it would draw the mean of the seeds left, a number no table
    shows (the tables' mean over such a group is "-")."""
    finite = part.groupby(by, sort=False)[column].transform(lambda v: bool(np.isfinite(v.to_numpy(float)).all()))
    finite = finite.astype(bool)
    left_out = part[~finite][by].drop_duplicates()
    if not left_out.empty:
        names = "; ".join(" ".join([str(row[0])] + [f"{a}={v}" for a, v in zip(by[1:], row[1:])])
                          for row in left_out.itertuples(index=False))
        ax.text(0.01, 0.01, f"not drawn (a seed's value is not finite): {names}", transform=ax.transAxes,
                fontsize=7, color="firebrick", va="bottom", wrap=True)
    return part[finite]


def _legend_outside(ax) -> None:
    if ax.get_legend() is not None:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))


def score_by_learner(runs: Runs, folder: Path) -> Figure:
    score = m.SCORES[runs.score]
    f, panels = _with_series(runs)
    f[score.name] = _shown(runs, f[score.name])
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.5, 1.1 * f["series"].nunique()) * len(panels), 4.5),
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = _finite_only(f[f["panel"] == panel], ["series"], score.name, ax)
        sns.barplot(data=part, x="series", y=score.name, hue="series", palette=_series_palette(part),
                    errorbar=across_seeds, capsize=0.2, ax=ax, legend=False)
        sns.stripplot(data=part, x="series", y=score.name, color="black", size=4, ax=ax)
        if score.kind == "proportion":  # chance: one class in N
            n_way = int(part["n_way"].iloc[0])
            ax.axhline(_shown(runs, 1.0 / n_way), color="grey", linestyle="--", linewidth=1,
                       label=f"chance (1/{n_way})")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel(f"{runs.metric.axis_label()} (dots: seeds)")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    return f"Test score by learner (bars: {INTERVAL}; dots: one per seed)", _save(fig, folder, "score_by_learner")


def against_axis(runs: Runs, axis: str, metric: m.Metric, folder: Path) -> Figure:
    """``metric`` against numeric axis ``axis``, one line per series and panel."""
    f, panels = _with_series(runs, exclude=(axis,))
    f = f[f[axis] != ABSENT].assign(**{axis: lambda d: d[axis].astype(float)})
    f = f.assign(value=f[metric.name] / metric.scale)
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = _finite_only(f[f["panel"] == panel], ["series", axis], "value", ax)
        sns.lineplot(data=part, x=axis, y="value", hue="series", style="series", palette=_series_palette(part),
                     markers=True, errorbar=across_seeds, ax=ax)
        _legend_outside(ax)
        ax.set_title(panel, fontsize=9)
        ax.set_ylabel(f"{metric.label}" + (f" ({metric.unit})" if metric.unit and metric.unit not in metric.label
                                           else ""))
        if (part[axis] == part[axis].round()).all():  # an integer axis (inner steps, K): no ticks at 1.25
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric.unit == "MB":
            ax.set_yscale("log")
    return f"{metric.label} against {axis}", _save(fig, folder, f"{metric.name}_vs_{axis}")


def score_vs_time(runs: Runs, folder: Path) -> Figure:
    score = m.SCORES[runs.score]
    f, _ = _with_series(runs)
    f[score.name] = _shown(runs, f[score.name])
    fig, ax = plt.subplots(figsize=(7.5, 4))
    sns.scatterplot(data=f, x=m.TRAIN_SECONDS.name, y=score.name, hue="series", style="series",
                    palette=_series_palette(f), ax=ax)
    _legend_outside(ax)
    ax.set_xlabel(m.TRAIN_SECONDS.label)
    ax.set_ylabel(runs.metric.axis_label())
    return "Score against training time (one point per run)", _save(fig, folder, "score_vs_time")


def validation_curves(runs: Runs, folder: Path) -> Figure:
    f, panels = _with_series(runs)
    curves = runs.curves.merge(f[["run_id", "series", "panel", "learner"]], on="run_id")
    curves["val_score"] = _shown(runs, curves["val_score"])
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        part = _finite_only(curves[curves["panel"] == panel], ["series", "iteration"], "val_score", ax)
        # style as well as colour: variants that train identically would otherwise hide one another
        sns.lineplot(data=part, x="iteration", y="val_score", hue="series", style="series",
                     palette=_series_palette(part), markers=True, errorbar=across_seeds, ax=ax)
        _legend_outside(ax)
        ax.set_title(panel, fontsize=9)
        ax.set_ylabel("validation " + runs.metric.axis_label().removeprefix("test "))
    return f"Validation curves ({INTERVAL})", _save(fig, folder, "validation_curves")


def adaptation_curves(runs: Runs, points: pd.DataFrame, folder: Path) -> Figure:
    """Test score against test-time adaptation steps (Finn et al.'s figure of section 5.1): one panel per test K,
    one line per series, the mean over seeds of each run's mean with the 95% t interval across seeds."""
    f, _ = _with_series(runs)
    points = points.merge(f[["run_id", "series"]], on="run_id")
    points["score"] = _shown(runs, points["score"])
    ks = sorted(points["test_k_shot"].unique())
    fig, axes = plt.subplots(1, len(ks), figsize=(6 * len(ks), 4), squeeze=False)
    for ax, k_shot in zip(axes[0], ks):
        part = _finite_only(points[points["test_k_shot"] == k_shot], ["series", "step"], "score", ax)
        sns.lineplot(data=part, x="step", y="score", hue="series", style="series", palette=_series_palette(part),
                     markers=True, errorbar=across_seeds, ax=ax)
        _legend_outside(ax)
        ax.set_title(f"test K = {k_shot}", fontsize=9)
        ax.set_xlabel("test-time adaptation steps")
        ax.set_ylabel(runs.metric.axis_label())
        if runs.metric.kind == "error":  # errors span orders of magnitude
            ax.set_yscale("log")
    return f"Adaptation curves: test score after each test-time step ({INTERVAL})", _save(
        fig, folder, "adaptation_curves")


def numeric_axes(runs: Runs) -> list[str]:
    """Condition axes with more than one value, all numeric: each gets score, time and memory figures."""
    numeric = []
    for axis in runs.varying():
        values = runs.finished[axis][runs.finished[axis] != ABSENT]
        if pd.to_numeric(values, errors="coerce").notna().all():
            numeric.append(axis)
    return numeric


def all_figures(runs: Runs, folder: Path) -> list[Figure]:
    if runs.finished.empty:
        return []
    sns.set_theme(style="whitegrid", context="notebook")
    made = [score_by_learner(runs, folder)]
    for axis in numeric_axes(runs):
        for metric in (m.SCORES[runs.score], m.TRAIN_MS, m.SAVED_MB):
            made.append(against_axis(runs, axis, metric, folder))
    made.append(score_vs_time(runs, folder))
    if not runs.curves.empty:
        made.append(validation_curves(runs, folder))
    return made


VERDICT_COLOURS = {"helps": "tab:green", "stronger together": "tab:green", "hurts": "tab:red",
                   "weaker together": "tab:red"}  # every other verdict (no evidence, no verdict): grey


def ablation_forest(runs: Runs, label: str, effects: pd.DataFrame, folder: Path) -> Figure:
    """One row per effect of ``label`` (simple effects, main effects, interactions): the effect in the score's unit
    with its 95% interval across seeds and episodes, coloured by its Holm-adjusted verdict; zero marked."""
    score = m.SCORES[runs.score]
    scale, unit = 1 / score.scale, score.difference_unit or score.unit or score.label
    rows = effects[effects["learner"] == label].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(10.5, 1.2 + 0.32 * len(rows)))
    for i, row in rows.iterrows():
        test = row["test"]
        colour = VERDICT_COLOURS.get(row["verdict"], "grey")
        error = None if pd.isna(test.half_width) else test.half_width * scale
        ax.errorbar(test.mean * scale, i, xerr=error, fmt="o" if row["kind"] != "interaction" else "s",
                    color=colour, capsize=3)
    names = [f"{r['component']}: {r['levels']}" + (f" ({r['kind']})" if r["kind"] != "simple effect" else "")
             + ("" if r["at"] == "-" else f" at {r['at']}") for _, r in rows.iterrows()]
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=1)
    better = "right" if score.higher_is_better else "left"
    ax.set_xlabel(f"effect on {score.label} ({unit}; {better} is better), with its 95% CI", fontsize=8)
    ax.set_title(f"{label}: green helps, red hurts, grey no evidence; squares: interactions", fontsize=8)
    name = "ablation_" + "".join(c if c.isalnum() else "_" for c in label)
    return f"Ablation effects of {label} (95% intervals; verdicts Holm-adjusted)", _save(fig, folder, name)


def sequential_looks(sequence, folder: Path) -> Figure:
    """Each comparison of the family's statistic (its p-value as a signed normal deviate) at every look it was
    tested, ending where it stopped, against the boundaries at Holm's first step (alpha over the family)."""
    title = ("Sequential design: each comparison's statistic across looks, against the boundaries at alpha / "
             "family size (grey; a rejection lowers the others')")
    fig, ax = plt.subplots(figsize=(9, 4))
    looks, first = sequence.plan.looks, {}
    for key, question in sequence.questions.items():
        seen = [s for s in sequence.decisions[key].seen if math.isfinite(s.z)]
        if not question.family or not seen:
            continue
        for s in seen:
            first[s.look] = max(first.get(s.look, 0.0), s.boundary)
        ax.plot([s.seeds for s in seen], [s.z for s in seen], marker="o", label=question.title)
    for sign in (1, -1):
        ax.plot([looks[k] for k in sorted(first)], [sign * first[k] for k in sorted(first)], color="grey",
                linestyle="--", marker="_", markersize=14)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xticks(list(looks))
    ax.set_xlabel("seeds at the look")
    ax.set_ylabel("statistic (signed z)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    return title, _save(fig, folder, "sequential_looks")
