"""Episodic datasets: one episode type, deterministic samplers, a registry by name.

Every module in this package is imported here, so a new dataset is one new file with its ``@register_dataset``
decorator and nothing else edited (as a learner in ``algorithms``). A module imports an optional library (Hugging
Face's ``datasets``) only when its dataset is loaded.
"""
import importlib
import pkgutil

from meta_bench.datasets.base import SPLITS, DataMissingError, DataRequestError, Dataset, TaskSource
from meta_bench.datasets.episode import Episode
from meta_bench.datasets.registry import DATASETS, load_dataset

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DATASETS", "SPLITS", "DataMissingError", "DataRequestError", "Dataset", "Episode", "TaskSource", "load_dataset"]
