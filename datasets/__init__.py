"""Episodic datasets: one episode type, deterministic samplers, a registry by name.

Importing the package registers every dataset module below.
"""
from meta_bench.datasets import glyphs, miniimagenet, omniglot, sinusoid  # noqa: F401  (registration)
from meta_bench.datasets.base import SPLITS, DataMissingError, DataRequestError, Dataset, TaskSource
from meta_bench.datasets.episode import Episode
from meta_bench.datasets.registry import DATASETS, load_dataset

__all__ = ["DATASETS", "SPLITS", "DataMissingError", "DataRequestError", "Dataset", "Episode", "TaskSource", "load_dataset"]
