"""The best configuration of every learner as a suite file that `bench run` evaluates."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import yaml

from bench.core.config import yaml_documents
from bench.spec.search import options_in
from bench.spec.suite import Suite
from bench.consumers.tune.options import TuneOptions
from bench.consumers.tune.studies import open_study


def best_suite_documents(suite_text: str, suite: Suite, options: TuneOptions) -> list[dict]:
    """The suite file's document of ``suite``, once per learner, with that learner's best values: what `bench run`
    evaluates (suite name ``<suite>_tuned``)."""
    raw = next(d for d in yaml_documents(suite_text, "suite file") if d.get("suite") == suite.suite)
    documents = []
    for spec in suite.learners:
        label = spec.display
        study = open_study(suite, options, label)
        best = study.best_trials[0] if len(suite.search.objectives) > 1 else study.best_trial
        document = {k: v for k, v in raw.items() if k != "search"}
        document["suite"] = f"{suite.suite}_tuned"
        learner = {"name": spec.name, "label": label,
                   "config": {**spec.config, **options_in("learner", best.params)}}
        document["learners"] = [learner]
        for section in ("training", "backbone"):
            values = options_in(section, best.params)
            if values:
                document[section] = {**raw.get(section, {}), **values}
        documents.append(document)
    return documents


def write_best(path: Path, documents: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("# the best configuration of each learner found by `bench tune`: run it with `bench run`\n"
            + yaml.safe_dump_all(documents, sort_keys=False))
    # a temporary file of this invocation's own (two invocations of one study write the same path), then an atomic
    # rename: never a half-written file. (Not mkstemp: its file is private to its owner, best.yaml is not.)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
