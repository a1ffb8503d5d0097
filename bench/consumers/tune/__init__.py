"""`bench tune`: an Optuna study per learner of a suite, each with the same budget, on validation episodes only.

A trial is one meta-training of the learner's first grid cell with the sampled options; its validation curve feeds
the pruner, its final validation score (and, as a second objective, ms per meta-iteration) is the value. Every trial
is an MLflow run under one parent run per study: pruned trials end KILLED with outcome ``pruned``, failing ones
FAILED, and the study goes on. Afterwards the best configuration of every learner is written as a suite file that
`bench run` accepts, evaluated on the test episodes across the suite's seeds, and reported.

One module per part: ``storage`` (opening a study storage), ``options``, ``trial_cell`` (what a trial trains),
``studies`` (names, opening, MLflow parent runs), ``accounting`` (the budget), ``objective`` (one trial),
``workers`` (worker processes), ``optimisation`` (every study to its budget), ``best`` (the best suite file).
"""
from __future__ import annotations

from bench.consumers.tune.accounting import CHARGED_STATES, FINISHED_STATES, charged
from bench.consumers.tune.best import best_suite_documents, write_best
from bench.consumers.tune.optimisation import optimise, run_workers, shortfalls
from bench.consumers.tune.options import TuneOptions
from bench.consumers.tune.studies import open_study, study_name, study_parents

__all__ = ["CHARGED_STATES", "FINISHED_STATES", "TuneOptions", "best_suite_documents", "charged", "open_study",
           "optimise", "run_workers", "shortfalls", "study_name", "study_parents", "write_best"]
