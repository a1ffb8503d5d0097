"""`bench report`: the comparison report of a suite, built from what MLflow holds and nothing else.

Writes reports/<suite>/report.md, a self-contained report.html (figures embedded), the figures as PNG and the
tables as CSV. Paired comparisons use the per-episode test scores each run logged, on identical test episodes.
"""
from __future__ import annotations

import base64
import html
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from scipy import stats  # noqa: E402

from bench import tracking  # noqa: E402
from bench.config import from_mapping  # noqa: E402
from bench.suite import ReportOptions  # noqa: E402
from bench.summary import format_score  # noqa: E402

CELL_KEYS = ["n_way", "k_shot", "inner_steps", "device", "seed"]
PAIR_KEYS = ["n_way", "k_shot", "device", "seed"]


@dataclass
class Runs:
    finished: pd.DataFrame  # one row per cell: the latest finished run of each config hash
    problems: pd.DataFrame  # cells with no finished run: their latest failed / skipped / interrupted attempt
    episodes: pd.DataFrame  # per-episode test scores of the finished runs
    curves: pd.DataFrame  # validation scores over meta-iterations
    header: dict
    score: str  # "accuracy" or "mse"


def _tag(frame: pd.DataFrame, name: str) -> pd.Series:
    column = f"tags.{name}"
    return frame[column] if column in frame else pd.Series([""] * len(frame), index=frame.index)


def _metric(frame: pd.DataFrame, name: str) -> pd.Series:
    column = f"metrics.{name}"
    return frame[column].astype(float) if column in frame else pd.Series([math.nan] * len(frame), index=frame.index)


def load_runs(suite: str, uri: str) -> Runs:
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, suite, create=False)
    if experiment is None:
        known = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise LookupError(f"no MLflow experiment named {suite!r} at {uri}; known experiments: {known}")
    raw = mlflow.search_runs(experiment_ids=[experiment], filter_string="tags.role = 'cell'", max_results=50000)
    if raw.empty:
        raise LookupError(f"experiment {suite!r} at {uri} holds no cell runs yet: run the suite first")
    raw = raw.sort_values("start_time")
    frame = pd.DataFrame({"run_id": raw["run_id"], "status": raw["status"], "outcome": _tag(raw, "outcome"),
                          "config_hash": _tag(raw, "config_hash"), "learner": _tag(raw, "label"),
                          "algorithm": _tag(raw, "learner"), "n_way": _tag(raw, "n_way").astype(int),
                          "k_shot": _tag(raw, "k_shot").astype(int), "inner_steps": _tag(raw, "inner_steps"),
                          "device": _tag(raw, "device"), "seed": _tag(raw, "seed").astype(int),
                          "device_name": _tag(raw, "device_name"), "git_commit": _tag(raw, "git_commit"),
                          "torch_version": _tag(raw, "torch_version"), "score_name": _tag(raw, "score"),
                          "error": _tag(raw, "error").fillna(""), "skip_reason": _tag(raw, "skip_reason").fillna("")})
    score = "mse" if (frame["score_name"] == "mse").any() else "accuracy"
    for name in (f"test_{score}", f"test_{score}_ci95", "train_ms_median", "train_ms_p90", "train_saved_bytes_peak",
                 "train_cuda_peak_bytes", "train_rss_peak_bytes", "train_seconds_total", "eval_ms_median"):
        frame[name] = _metric(raw, name).values
    done = frame[(frame["status"] == "FINISHED") & (frame["outcome"] == "finished")]
    finished = done.groupby("config_hash").tail(1)
    problems = frame[~frame["config_hash"].isin(finished["config_hash"])].groupby("config_hash").tail(1)
    episodes, curves = [], []
    with tempfile.TemporaryDirectory() as folder:
        for row in finished.itertuples():
            path = mlflow.artifacts.download_artifacts(run_id=row.run_id, artifact_path="test_episodes.csv",
                                                       dst_path=str(Path(folder) / row.run_id))
            scores = pd.read_csv(path)
            scores = scores.rename(columns={scores.columns[1]: "score"})
            episodes.append(scores.assign(run_id=row.run_id))
            for m in client.get_metric_history(row.run_id, "val_score"):
                curves.append({"run_id": row.run_id, "iteration": m.step, "val_score": m.value})
    episodes = pd.concat(episodes, ignore_index=True) if episodes else pd.DataFrame(columns=["episode", "score", "run_id"])
    curves = pd.DataFrame(curves, columns=["run_id", "iteration", "val_score"])
    return Runs(finished.reset_index(drop=True), problems.reset_index(drop=True), episodes, curves,
                _header(client, experiment, suite, frame), score)


def _suite_artifact(client, experiment: str | None, name: str) -> str | None:
    """Text of artifact ``name`` of the latest suite invocation (None where there is none)."""
    parents = [] if experiment is None else client.search_runs(
        [experiment], filter_string="tags.role = 'suite'", order_by=["start_time DESC"], max_results=1)
    if not parents:
        return None
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=parents[0].info.run_id, artifact_path=name,
                                                       dst_path=folder)
        except MlflowException:  # an older invocation that did not log it
            return None
        return Path(path).read_text()


def _header(client, experiment: str, suite: str, frame: pd.DataFrame) -> dict:
    logged = _suite_artifact(client, experiment, "dataset.json")
    dataset = json.loads(logged) if logged else {"note": "dataset statistics not logged with these runs"}
    return {"suite": suite, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
            "git commits": ", ".join(sorted(set(frame["git_commit"]))),
            "torch": ", ".join(sorted(set(frame["torch_version"]))),
            "devices": ", ".join(sorted({f"{d} ({n})" for d, n in zip(frame["device"], frame["device_name"])})),
            "dataset": dataset}


def main_table(runs: Runs) -> pd.DataFrame:
    f = runs.finished
    score = runs.score
    table = pd.DataFrame({
        "learner": f["learner"], "N": f["n_way"], "K": f["k_shot"], "S": f["inner_steps"].replace("", "-"),
        "device": f["device"], "seed": f["seed"],
        f"test {score}": [format_score(score, m, c) for m, c in zip(f[f"test_{score}"], f[f"test_{score}_ci95"])],
        "ms / meta-iter (median)": f["train_ms_median"].round(1),
        "saved-for-backward MB": (f["train_saved_bytes_peak"] / 1e6).round(3),
        "CUDA peak MB": (f["train_cuda_peak_bytes"] / 1e6).round(1).astype(object).where(
            f["train_cuda_peak_bytes"].notna(), "-"),
        "meta-train s": f["train_seconds_total"].round(1),
    })
    return table.sort_values(["N", "K", "device", "seed", "S", "learner"]).reset_index(drop=True)


def paired_table(runs: Runs, options: ReportOptions) -> tuple[pd.DataFrame, str]:
    """Each learner minus the reference on the identical test episodes: mean, 95% CI, Wilcoxon signed-rank."""
    f = runs.finished
    learners = sorted(set(f["learner"]))
    reference = options.reference if options.reference in learners else (learners[0] if learners else "")
    note = "" if reference == options.reference else \
        f"The configured reference {options.reference!r} has no finished runs here; {reference!r} stands in."
    rows = []
    by_run = {run: group.sort_values("episode")["score"].to_numpy() for run, group in runs.episodes.groupby("run_id")}
    refs = f[f["learner"] == reference]
    for row in f[f["learner"] != reference].itertuples():
        match = refs
        for key in PAIR_KEYS:
            match = match[match[key] == getattr(row, key)]
        if row.inner_steps != "":
            match = match[match["inner_steps"] == row.inner_steps]
        for ref in match.itertuples():
            a, b = by_run.get(row.run_id), by_run.get(ref.run_id)
            if a is None or b is None or len(a) != len(b):
                continue
            d = a - b
            mean = float(d.mean())
            half = 1.96 * float(d.std(ddof=1)) / math.sqrt(len(d)) if len(d) > 1 else math.nan
            p = 1.0 if np.all(d == 0) else float(stats.wilcoxon(d, zero_method="pratt").pvalue)
            significant = p < options.alpha and not (mean - half <= 0 <= mean + half)
            rows.append({"learner": row.learner, "reference": reference, "N": row.n_way, "K": row.k_shot,
                         "S": row.inner_steps or "-", "ref S": ref.inner_steps or "-", "device": row.device,
                         "seed": row.seed, "episodes": len(d), "mean difference": round(mean, 4),
                         "95% CI": f"[{mean - half:.4f}, {mean + half:.4f}]", "Wilcoxon p": round(p, 4),
                         "verdict": ("better" if (mean > 0) == (runs.score == "accuracy") else "worse")
                         if significant else "within noise"})
    return pd.DataFrame(rows), note


def _palette(labels) -> dict[str, tuple]:
    """One colour per learner, the same in every figure of every report: registered learners take fixed slots,
    other labels the slots after them."""
    from algorithms import LEARNERS  # noqa: PLC0415

    order = LEARNERS.names() + sorted(set(labels) - set(LEARNERS.names()))
    colours = sns.color_palette("tab10", n_colors=10)
    return {name: colours[i % 10] for i, name in enumerate(order)}


def _note_coinciding(ax, data: pd.DataFrame, column: str) -> None:
    """Learners whose points coincide hide one another; say so on the figure."""
    series = {name: tuple(part.sort_values("S")[column].round(6)) for name, part in data.groupby("learner")}
    groups: dict[tuple, list[str]] = {}
    for name, values in series.items():
        groups.setdefault(values, []).append(name)
    same = [", ".join(names) for names in groups.values() if len(names) > 1]
    if same:
        ax.set_title("identical, drawn on top of each other: " + "; ".join(same), fontsize=8)


def _save(fig, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def figures(runs: Runs, folder: Path) -> list[tuple[str, Path]]:
    """Only what the runs hold: an ablation that was not run leaves its figure out."""
    f = runs.finished.copy()
    if f.empty:
        return []
    sns.set_theme(style="whitegrid", context="notebook")
    palette = _palette(list(f["learner"]))
    score, made = runs.score, []
    label = "test accuracy" if score == "accuracy" else "test MSE"
    shots = sorted({(n, k) for n, k in zip(f["n_way"], f["k_shot"])})
    fig, axes = plt.subplots(1, len(shots), figsize=(4.5 * len(shots), 4), squeeze=False)
    for ax, (n, k) in zip(axes[0], shots):
        part = f[(f["n_way"] == n) & (f["k_shot"] == k)].groupby("learner")[[f"test_{score}", f"test_{score}_ci95"]].mean()
        ax.bar(part.index, part[f"test_{score}"], yerr=part[f"test_{score}_ci95"], capsize=4,
               color=[palette[name] for name in part.index])
        if score == "accuracy":
            ax.axhline(1.0 / n, color="grey", linestyle="--", linewidth=1, label="chance")
            ax.legend(fontsize=8, loc="upper left")
        ax.set_title(f"{n}-way {k}-shot")
        ax.set_ylabel(f"{label} (95% CI)")
        ax.tick_params(axis="x", rotation=30)
    made.append(("Test score by learner", _save(fig, folder, "accuracy_by_learner")))
    steps = f[f["inner_steps"] != ""].assign(S=lambda d: d["inner_steps"].astype(int))
    if steps["S"].nunique() > 1:
        for column, name, ylabel, log in (("train_ms_median", "time_vs_inner_steps", "ms per meta-iteration", False),
                                          ("train_saved_bytes_peak", "memory_vs_inner_steps",
                                           "peak saved-for-backward bytes", True)):
            fig, ax = plt.subplots(figsize=(7.5, 4))
            sns.lineplot(data=steps, x="S", y=column, hue="learner", style="learner", palette=palette, markers=True,
                         ax=ax)
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
            _note_coinciding(ax, steps, column)
            ax.set_xlabel("inner steps S")
            ax.set_ylabel(ylabel)
            if log:
                ax.set_yscale("log")
            made.append((ylabel.capitalize() + " against inner steps", _save(fig, folder, name)))
    fig, ax = plt.subplots(figsize=(6, 4))
    for learner, part in f.groupby("learner"):
        ax.errorbar(part["train_seconds_total"], part[f"test_{score}"], yerr=part[f"test_{score}_ci95"], fmt="o",
                    capsize=3, color=palette[learner], label=learner)
    ax.set_xlabel("meta-training wall-clock (s)")
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
    made.append(("Score against training time (Pareto view)", _save(fig, folder, "accuracy_vs_time")))
    if not runs.curves.empty:
        curves = runs.curves.merge(f[["run_id", "learner", "n_way", "k_shot"]], on="run_id")
        fig, axes = plt.subplots(1, len(shots), figsize=(6.5 * len(shots), 4), squeeze=False)
        for ax, (n, k) in zip(axes[0], shots):
            part = curves[(curves["n_way"] == n) & (curves["k_shot"] == k)]
            # style as well as colour: variants that train identically would otherwise hide one another
            sns.lineplot(data=part, x="iteration", y="val_score", hue="learner", style="learner", palette=palette,
                         markers=True, ax=ax)
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
            ax.set_title(f"{n}-way {k}-shot")
            ax.set_ylabel("validation " + ("accuracy" if score == "accuracy" else "MSE"))
        made.append(("Validation curves", _save(fig, folder, "validation_curves")))
    return made


def _dataset_lines(statistics: dict) -> str:
    """The dataset's statistics as a short list: one line per split instead of a JSON dump."""
    lines = []
    for key, value in statistics.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in value.items())
        lines.append(f"- {key}: {value}")
    return "\n".join(lines)


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(none)\n"
    cells = table.astype(str).to_numpy().tolist()
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def problems_table(runs: Runs) -> pd.DataFrame:
    p = runs.problems
    return pd.DataFrame({"learner": p["learner"], "N": p["n_way"], "K": p["k_shot"],
                         "S": p["inner_steps"].replace("", "-"), "device": p["device"], "seed": p["seed"],
                         "outcome": p["outcome"].replace("", "interrupted"),
                         "reason": [e or s or "run did not finish" for e, s in zip(p["error"], p["skip_reason"])]})


def logged_options(suite: str, uri: str) -> ReportOptions:
    """The report options of the suite file that the latest invocation logged to MLflow (defaults if none)."""
    client = tracking.client_for(uri)
    logged = _suite_artifact(client, tracking.experiment_id(client, suite, create=False), "suite.yaml")
    if logged is None:
        return ReportOptions()
    documents = [d for d in yaml.safe_load_all(logged) if isinstance(d, dict)]
    raw = next((d["report"] for d in documents if d.get("suite") == suite and "report" in d), {})
    return from_mapping(ReportOptions, raw, f"report options logged for {suite}")


def build_report(suite: str, uri: str, options: ReportOptions | None = None) -> Path:
    """``options`` None: those of the suite file logged with the runs."""
    options = options or logged_options(suite, uri)
    runs = load_runs(suite, uri)
    folder = Path(options.output_dir)
    folder = (folder if folder.is_absolute() else tracking.PROJECT_ROOT / folder) / suite
    folder.mkdir(parents=True, exist_ok=True)
    main, (paired, paired_note), problems = main_table(runs), paired_table(runs, options), problems_table(runs)
    for name, table in (("main", main), ("paired", paired), ("failed_and_skipped", problems)):
        table.to_csv(folder / f"{name}.csv", index=False)
    made = figures(runs, folder)
    header = runs.header
    dataset = _dataset_lines(header["dataset"])
    shape = ("per-episode accuracies are bounded and discrete" if runs.score == "accuracy"
             else "per-episode MSEs are skewed and heavy-tailed")
    why = ("Wilcoxon signed-rank test (Pratt's handling of zero differences) on the per-episode differences: "
           f"{shape}, so a test without a normality assumption fits better than a paired t-test. A difference is "
           f"called significant when p < {options.alpha} and the 95% CI excludes 0; otherwise it is within noise.")
    md = [f"# meta-bench report: {suite}\n\n",
          f"- generated: {header['generated']}\n- git commit(s): {header['git commits']}\n"
          f"- torch: {header['torch']}\n- devices: {header['devices']}\n\n",
          f"## Dataset\n\n{dataset}\n\n", "## Results\n\n", _markdown(main),
          f"\n## Paired comparison against `{paired['reference'].iloc[0] if not paired.empty else options.reference}`\n\n",
          (paired_note + "\n\n" if paired_note else "") + why + "\n\n", _markdown(paired),
          "\n## Figures\n"] + [f"\n### {title}\n\n![{title}]({path.name})\n" for title, path in made] + \
         ["\n## Failed and skipped cells\n\n", _markdown(problems)]
    (folder / "report.md").write_text("".join(md))
    figures_html = "".join(
        f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'/>" for title, path in made)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>meta-bench: {html.escape(suite)}</title>"
            "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}img{max-width:100%}</style></head><body>"
            f"<h1>meta-bench report: {html.escape(suite)}</h1><ul>"
            + "".join(f"<li>{html.escape(k)}: {html.escape(str(header[k]))}</li>"
                      for k in ("generated", "git commits", "torch", "devices"))
            + f"</ul><h2>Dataset</h2><pre>{html.escape(dataset)}</pre><h2>Results</h2>{main.to_html(index=False)}"
            f"<h2>Paired comparison</h2><p>{html.escape(paired_note)}</p><p>{html.escape(why)}</p>"
            f"{paired.to_html(index=False) if not paired.empty else '<p>(none)</p>'}<h2>Figures</h2>{figures_html}"
            f"<h2>Failed and skipped cells</h2>"
            f"{problems.to_html(index=False) if not problems.empty else '<p>(none)</p>'}</body></html>")
    (folder / "report.html").write_text(page)
    return folder / "report.md"
