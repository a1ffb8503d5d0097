"""A report's conditions, from the cells of the suite as it stands: every axis, the settings that tell a learner's
cells apart, and each cell's definition (its configuration less the seed). Pure functions of ``Cell``s, shared by the
report and the table `bench run` prints (which must not import the report's plotting)."""
from __future__ import annotations

from dataclasses import replace

from bench.core.config import flatten
from bench.spec.suite import ABSENT, AXES, Cell


# resolved keys that are no setting: the suite's name (one per report), the label (what is compared) and the grid's axes
NOT_SETTINGS = ("suite", "label", *AXES)


def _spelled(key: str) -> str:
    """A resolved key as a suite file spells it: the condition's name in the report."""
    for resolved, spelled in (("learner_config.", "config."), ("dataset_options.", "dataset.options.")):
        if key.startswith(resolved):
            return spelled + key[len(resolved):]
    return {"learner": "learner.name", "dataset": "dataset.name"}.get(key, key)


def _settings(cell: Cell, options: list[str]) -> dict[str, str]:
    """What a cell runs with besides its axes, flat (``training.lr``): the resolved configuration less the suite's
    name, the label, the grid's axes and the swept options."""
    axes = set(NOT_SETTINGS) | {f"learner_config.{option}" for option in options}
    return {key: str(value) for key, value in flatten(cell.resolved()).items() if key not in axes}


def _swept(cells: list[Cell]) -> list[str]:
    return list(dict.fromkeys(option for cell in cells for option in cell.options))


def _by_label(cells: list[Cell]) -> dict[str, dict[str, dict[str, str]]]:
    """label -> config hash -> the settings of that cell."""
    options, out = _swept(cells), {}
    for cell in cells:
        out.setdefault(cell.label, {})[cell.config_hash] = _settings(cell, options)
    return out


def _setting_axes(cells: list[Cell]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The settings in which cells of one learner differ besides their axes and the seed (two documents of one suite
    that differ in training.lr), as condition axes that work like a swept option: their names, and config hash ->
    each cell's value (``-`` where its configuration has no such key). A setting that differs between learners only
    is part of what is compared (a tuned suite: each learner's document with its own best training.lr)."""
    by_label = _by_label(cells)
    settings = {h: setting for part in by_label.values() for h, setting in part.items()}
    varying = [key for key in dict.fromkeys(k for setting in settings.values() for k in setting)
               if any(len({s.get(key, ABSENT) for s in part.values()}) > 1 for part in by_label.values())]
    return ([_spelled(key) for key in varying],
            {h: {_spelled(key): setting.get(key, ABSENT) for key in varying} for h, setting in settings.items()})


def settings_between_learners(cells: list[Cell]) -> list[str]:
    """Shared settings (training, evaluation, backbone, data: not a learner's own config) in which the learners
    differ while each learner's cells agree, as in a tuned suite: part of what their comparison compares, so the
    header names them. One line each: ``training.lr: maml 0.01, anil 0.003``."""
    by_label = _by_label(cells)
    lines = []
    for key in dict.fromkeys(k for part in by_label.values() for setting in part.values() for k in setting
                             if not k.startswith("learner")):
        values = {label: {s.get(key, ABSENT) for s in part.values()} for label, part in by_label.items()}
        if all(len(v) == 1 for v in values.values()) and len(set().union(*values.values())) > 1:
            lines.append(f"{_spelled(key)}: " + ", ".join(f"{label} {v.pop()}" for label, v in values.items()))
    return lines


def cell_axes(cells: list[Cell]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Every axis of ``cells`` (those of one report), in order, and config hash -> the cell's value of each and its
    definition. Taken from the cell as the suite stands now, never from the tags a run was made with: a reused run
    keeps the tags of the suite that made it (no ``axis.inner_steps`` where inner_steps was not swept then)."""
    options = _swept(cells)
    names, settings = _setting_axes(cells)
    values = {c.config_hash: {**replace(c, options=tuple(options)).axes, **settings[c.config_hash],
                              "definition": replace(c, seed=0).config_hash} for c in cells}
    return list(AXES) + options + names, values
