"""Datasets by name: a suite names one and its options (a typed dataclass per dataset)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from bench.core.config import ConfigError, from_mapping
from bench.core.plugins import PluginError
from bench.core.registry import Registry
from meta_bench.datasets.base import Dataset
from meta_bench.datasets.content import of_options


@dataclass(frozen=True)
class DatasetEntry:
    options: type
    load: Callable[[Any], Dataset]
    backbone: str  # "conv4" or "mlp"
    conv_filters: int = 64
    version: int = 1  # of the code that makes its episodes: part of every evaluation fingerprint and resume key
    # learner options whose defaults suit this kind of task better than the learners' own (chosen for images): a
    # suite's cells take them unless the suite sets the option (sinusoid: Finn et al.'s inner rate)
    learner_defaults: Mapping[str, Any] = field(default_factory=dict)
    # the files it expects on disk and where ("" for generated data): what `bench datasets` and errors state
    layout: str = ""
    # (options) -> problems found checking its files against published checksums (empty: verified); None: no
    # published checksums to check (`bench datasets NAME --verify`)
    verify: Callable[[Any], list[str]] | None = None


def _adopt(name: str, loaded: object) -> tuple[DatasetEntry, dict[str, str]]:
    """A plugin dataset: a ``DatasetEntry`` (its options dataclass, loader, backbone and version)."""
    if not isinstance(loaded, DatasetEntry):
        raise PluginError(f"dataset {name!r} names {loaded!r}, which is not a "
                          f"meta_bench.datasets.registry.DatasetEntry")
    return loaded, {}


DATASETS: Registry[DatasetEntry] = Registry("dataset", group="meta_bench.datasets", adopt=_adopt)


def register_dataset(name: str, options: type, backbone: str, conv_filters: int = 64, version: int = 1,
                     learner_defaults: Mapping[str, Any] | None = None, layout: str = "",
                     verify: Callable[[Any], list[str]] | None = None):
    def add(load: Callable[[Any], Dataset]) -> Callable[[Any], Dataset]:
        DATASETS.register(name)(DatasetEntry(options, load, backbone, conv_filters, version,
                                             dict(learner_defaults or {}), layout, verify))
        return load

    return add


def parse_options(name: str, options: Mapping[str, Any] | None) -> Any:
    return from_mapping(DATASETS[name].options, options, f"dataset.options ({name})")


_LOADED: dict[tuple[str, Any], Dataset] = {}


def load_dataset(name: str, options: Any = None) -> Dataset:
    """The dataset ``name`` with typed ``options`` (a mapping is parsed first); loaded once per process."""
    entry = DATASETS[name]
    if options is None or isinstance(options, Mapping):
        options = parse_options(name, options)
    key = (name, options)
    if key not in _LOADED:
        data = entry.load(options)
        if not data.content_identity:  # a plugin's loader that says nothing of its files: its options, said so
            data.content_identity = of_options(name, options)
        _LOADED[key] = data
    return _LOADED[key]


def presence(name: str) -> str:
    """Whether ``name``'s data is there under its default options: "generated", "present (<identity>)", or what is
    missing and where it goes (loading it, so a present dataset is decoded and cached once)."""
    from meta_bench.datasets.base import DataMissingError, DataRequestError  # noqa: PLC0415

    entry = DATASETS[name]
    try:
        data = load_dataset(name)
    except ConfigError as error:  # an option without a default (a folder's root): nothing to look at yet
        return f"needs options: {str(error).splitlines()[0]}"
    except DataMissingError as error:
        return f"absent: {error}"
    except DataRequestError as error:
        return f"present but unusable: {error}"
    if not entry.layout:
        return f"generated ({data.content_identity})"
    return f"present ({data.content_identity})"
