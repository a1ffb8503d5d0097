"""Meta-learners: one interface (algorithms.base), one file per learner, registered by name.

Every module in this package is imported here, so a new learner is one new file with its
``@register_learner("name")`` decorator and nothing else edited.
"""
import importlib
import pkgutil

from meta_bench.algorithms.base import LEARNERS, MetaLearner, StepResult, TaskSpec, register_learner

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["LEARNERS", "MetaLearner", "StepResult", "TaskSpec", "register_learner"]
