"""The generated reference names every suite key, every command-line flag of every command, every metric and every
tag. The keys and flags are found here from the code itself (dataclasses, registries, the parser's actions), not
from the generator's own lists, so a generator that drops one fails."""
import argparse
import dataclasses
import typing

from bench.core import metrics, tags
from bench.spec.search import ParamSpec
from bench.spec.suite import Suite
from docs.tools.reference import cli_page, cli_parser, metrics_page, suite_page
from meta_bench.algorithms import LEARNERS
from meta_bench.datasets import DATASETS


def dataclass_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key a mapping read into ``cls`` may give, dotted, nested dataclasses followed (``[]``: list items)."""
    keys, hints = [], typing.get_type_hints(cls)
    for field in (f for f in dataclasses.fields(cls) if f.init):
        keys.append(prefix + field.name)
        hint = hints[field.name]
        inner = [a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)]
        if inner:
            items = "[]" if typing.get_origin(hint) is tuple else ""
            keys += dataclass_keys(inner[0], f"{prefix}{field.name}{items}.")
    return keys


def section(page: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of its level or above."""
    start = page.index(heading + "\n")
    level = heading.split(" ")[0]
    ends = [page.find(f"\n{'#' * n} ", start + len(heading)) for n in range(1, len(level) + 1)]
    return page[start:min([e for e in ends if e != -1], default=len(page))]


def test_every_suite_key_is_in_the_reference():
    page = suite_page()
    missing = [key for key in dataclass_keys(Suite) if f"`{key}`" not in page]
    missing += [key for key in dataclass_keys(ParamSpec, "search.space.<parameter>.") if f"`{key}`" not in page]
    for name in LEARNERS.names():
        options = section(page, f"### `{name}`")
        missing += [f"{name}: {key}" for key in dataclass_keys(LEARNERS[name].Config, "learners[].config.")
                    if f"`{key}`" not in options]
    for name in DATASETS.names():
        options = section(page, f"### `{name}`")
        missing += [f"{name}: {key}" for key in dataclass_keys(DATASETS[name].options, "dataset.options.")
                    if f"`{key}`" not in options]
    assert not missing, f"suite keys missing from the reference: {missing}"
    assert "`training.meta_iterations`" in page and "`learners[].config.inner_lr`" in page  # the walk itself works


def test_every_command_and_flag_is_in_the_reference():
    parser, page = cli_parser(), cli_page()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = []
    for name, command in commands.items():
        text = section(page, f"## `{name}`")
        for action in command._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue  # --help, and the internal --worker-shares of `tune`'s worker processes
            for option in action.option_strings or [action.metavar or action.dest]:
                if f"`{option}`" not in text:
                    missing.append(f"{name} {option}")
    assert not missing, f"command-line flags missing from the reference: {missing}"
    assert {"run", "tune", "report", "ci-check"} <= set(commands) and "`--executor`" in page


def test_every_metric_and_tag_is_in_the_reference():
    page = metrics_page()
    names = [m.name for m in metrics.SCORES.values()]
    names += [value.name for value in vars(metrics).values() if isinstance(value, metrics.Metric)]
    names += [metrics.time_in(phase) for phase in metrics.TIME_PHASES]
    names += [value for name, value in vars(tags).items() if name.isupper() and isinstance(value, str)]
    names += [value for name, value in vars(metrics).items() if name.isupper() and isinstance(value, str)]
    missing = [name for name in names if f"`{name}`" not in page]
    assert not missing, f"metrics and tags missing from the reference: {missing}"
