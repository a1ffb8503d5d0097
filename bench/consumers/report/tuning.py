"""The report of a tuning run: per learner's study, the optimisation history, parameter importances (Optuna's
fANOVA) and, for two objectives, the Pareto front, drawn with Optuna's matplotlib visualisations."""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.visualization import matplotlib as plots  # noqa: E402

from bench.consumers.report import render  # noqa: E402


def _save(axes, path: Path) -> Path:
    figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
    figure.set_size_inches(8, 4.5)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def study_blocks(study: optuna.Study, label: str, folder: Path) -> list[render.Block]:
    trials = study.get_trials(deepcopy=False)
    states = pd.Series([t.state.name for t in trials]).value_counts().to_dict()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    blocks: list[render.Block] = [render.Heading(f"{label} (study {study.study_name})"),
                                  render.Items(tuple(f"{state}: {count}" for state, count in sorted(states.items())))]
    if not complete:
        return blocks + [render.Text("No trial completed: nothing to show.")]
    best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    blocks.append(render.Table(pd.DataFrame([{"trial": t.number, "values": ", ".join(f"{v:.4g}" for v in t.values),
                                              **t.params} for t in best])))
    safe = study.study_name.replace("/", "_")
    # the objectives by name (the study records them: bench.consumers.tune.studies.objective_names), not
    # "Objective Value"
    names = study.metric_names or ["validation score", "ms / meta-iteration"][:len(study.directions)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if len(study.directions) > 1:
            path = _save(plots.plot_pareto_front(study, target_names=names), folder / f"{safe}_pareto.png")
            blocks.append(render.Image("Pareto front", path))
            target = {"target": lambda t: t.values[0], "target_name": names[0]}
        else:
            target = {"target_name": names[0]}
            path = _save(plots.plot_optimization_history(study, target_name=names[0]), folder / f"{safe}_history.png")
            blocks.append(render.Image("Optimisation history", path))
        if len(complete) >= 2 and study.best_trials[0].params:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            try:
                axes = plots.plot_param_importances(study, evaluator=evaluator, **target)
            except RuntimeError as error:  # e.g. the completed trials do not vary: said in the report
                plt.close("all")
                blocks.append(render.Text(f"Parameter importances (fANOVA) not computable: {error}"))
            else:
                blocks.append(render.Image("Parameter importances (fANOVA)", _save(axes, folder /
                                                                                    f"{safe}_importances.png")))
    return blocks


def build_tuning_report(studies: dict[str, optuna.Study], title: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    blocks: list[render.Block] = [render.Heading(f"meta-bench tuning: {title}", 1),
                                  render.Text("Every trial meta-trains the learner's first grid cell and is scored on "
                                              "validation episodes only; the test episodes are used once, by the "
                                              "evaluation of the best configurations (their own report).")]
    for label, study in studies.items():
        blocks += study_blocks(study, label, folder)
    (folder / "tuning.md").write_text(render.markdown(blocks), encoding="utf-8")
    (folder / "tuning.html").write_text(render.page(f"meta-bench tuning: {title}", blocks), encoding="utf-8")
    return folder / "tuning.md"
