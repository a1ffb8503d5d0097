"""The reference pages, generated from the code when the site is built (``docs/tools/hook.py``), so they cannot drift:
every suite key from the typed config dataclasses (their docstrings and field comments), every command and flag from
`python -m bench`'s own argparse parser, every metric and tag from ``bench/core/metrics.py`` and ``tags.py``.
``tests/docs/test_reference.py`` checks that every key and flag appears."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any, Callable, Iterator

# -- reading what the source says about a field ------------------------------------------------------------------


def _comments(source: str) -> dict[int, str]:
    """Line number (1-based) -> the text of the comment on that line."""
    return {token.start[0]: token.string.lstrip("#").strip()
            for token in tokenize.generate_tokens(io.StringIO(source).readline) if token.type == tokenize.COMMENT}


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in ``cls``'s own source: the comment lines right above it, then the one after it on
    its line. Empty for a class without source (one made by ``dataclasses.make_dataclass``)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # made at run time: no source file to read (a preset's Config)
        return {}
    lines, comments = source.splitlines(), _comments(source)
    found = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, line = [], node.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            text = " ".join(above + ([comments[node.end_lineno]] if node.end_lineno in comments else []))
            found[node.target.id] = text
    return found


def _docstring_parts(doc: str, names: list[str]) -> dict[str, str]:
    """A docstring of the form ``name: what; other, third: what`` cut at each clause that opens with field names and
    a colon: field -> its part (a part names its fields where it describes several)."""
    name = "(?:``)?(?:%s)(?:``)?" % "|".join(map(re.escape, names))
    opening = re.compile(r"(?:^|(?<=; )|(?<=\. ))(%s(?:, %s)*): " % (name, name))
    hits = list(opening.finditer(doc))
    parts: dict[str, str] = {}
    for hit, end in zip(hits, [h.start() for h in hits[1:]] + [len(doc)]):
        described = [n.strip("`") for n in hit.group(1).split(", ")]
        text = doc[hit.end():end].strip().rstrip(";").strip()
        for field in described:
            parts.setdefault(field, text if len(described) == 1 else f"{hit.group(1)}: {text}")
    return parts


@dataclasses.dataclass(frozen=True)
class Key:
    """One key a suite file may give."""

    path: str  # dotted, ``[]`` for an item of a list: ``learners[].name``
    type: str
    default: str
    about: str


def _type_text(annotation: Any) -> str:
    """A field's type as its source writes it (``A | B`` as "A or B": a table cell cannot hold a pipe)."""
    if not isinstance(annotation, str):
        annotation = annotation.__name__ if isinstance(annotation, type) else repr(annotation).replace("typing.", "")
    return annotation.replace(" | ", " or ")


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(its section's defaults)"
    return f"`{value!r}`"


def documented_fields(cls: type, sources: tuple[type, ...] = ()) -> list[Key]:
    """``cls``'s keys (the fields set at construction) with what its source says of each: the field's comment,
    else its part of the class docstring; ``sources`` are further classes to read (a preset's full config)."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    about: dict[str, str] = {}
    for source in (klass for klass in (*cls.__mro__, *sources) if dataclasses.is_dataclass(klass)):
        for name, text in _field_comments(source).items():
            if text and name in names:
                about.setdefault(name, text)
        for name, text in _docstring_parts(_own_doc(source), names).items():
            about.setdefault(name, text)
    return [Key(f.name, _type_text(f.type), _default_text(f), about.get(f.name, "")) for f in fields]


# -- suite keys ---------------------------------------------------------------------------------------------------


def _nested(annotation: Any) -> tuple[type | None, str]:
    """The dataclass a field holds (directly, as one choice of a union, or as list items) and the path suffix it
    takes."""
    if dataclasses.is_dataclass(annotation):
        return annotation, ""
    arguments = [a for a in typing.get_args(annotation) if a is not type(None) and a is not Ellipsis]
    if typing.get_origin(annotation) in (tuple, list) and arguments and dataclasses.is_dataclass(arguments[0]):
        return arguments[0], "[]"
    inner = [a for a in arguments if dataclasses.is_dataclass(a)]  # one choice of a union (X | None, list | plan)
    return (inner[0], "") if inner else (None, "")


def suite_sections() -> list[tuple[str, type, list[Key]]]:
    """The suite file's sections, from ``bench.spec.suite.Suite`` down: (path, dataclass, its keys)."""
    from bench.spec.suite import Suite

    sections = []

    def walk(cls: type, prefix: str) -> None:
        keys = documented_fields(cls)
        sections.append((prefix, cls, keys))
        hints = typing.get_type_hints(cls)
        for key in keys:
            inner, suffix = _nested(hints[key.path])
            if inner is not None:
                walk(inner, f"{prefix}.{key.path}{suffix}" if prefix else f"{key.path}{suffix}")

    walk(Suite, "")
    return sections


def search_parameter_keys() -> list[Key]:
    from bench.spec.search import ParamSpec

    return documented_fields(ParamSpec)


def learner_options() -> Iterator[tuple[str, type, list[Key]]]:
    """Every registered learner's options (``learners[].config`` and ``grid.options``)."""
    from meta_bench.algorithms import LEARNERS

    for name, learner in LEARNERS.items():
        configs = tuple(klass.Config for klass in learner.__mro__ if "Config" in vars(klass))  # a preset's full config
        yield name, learner, documented_fields(learner.Config, configs)


def dataset_options() -> Iterator[tuple[str, type, list[Key]]]:
    """Every registered dataset's options (``dataset.options``)."""
    from meta_bench.datasets import DATASETS

    for name, entry in DATASETS.items():
        yield name, entry.options, documented_fields(entry.options)


def all_suite_keys() -> list[str]:
    """Every dotted key of a suite file: what the reference must name."""
    from meta_bench.algorithms.backbones import BackboneConfig  # noqa: F401  (walked through Suite.backbone)

    keys = [f"{prefix}.{key.path}" if prefix else key.path for prefix, _, section in suite_sections()
            for key in section]
    keys += [f"search.space.<parameter>.{key.path}" for key in search_parameter_keys()]
    keys += [f"learners[].config.{key.path} ({name})" for name, _, options in learner_options() for key in options]
    keys += [f"dataset.options.{key.path} ({name})" for name, _, options in dataset_options() for key in options]
    return keys


def _table(keys: list[Key], prefix: str) -> list[str]:
    rows = ["| key | type | default | what it is |", "|---|---|---|---|"]
    for key in keys:
        path = f"{prefix}.{key.path}" if prefix else key.path
        about = key.about.replace("|", "\\|")
        rows.append(f"| `{path}` | `{key.type}` | {key.default} | {about} |")
    return rows


def _own_doc(cls: type) -> str:
    """``cls``'s own docstring, one paragraph; "" where it has none (a dataclass then shows its signature)."""
    doc = vars(cls).get("__doc__") or ""
    return "" if doc.startswith(f"{cls.__name__}(") else " ".join(doc.split())


def _doc(cls: type) -> list[str]:
    return [_own_doc(cls), ""] if _own_doc(cls) else []


def suite_page() -> str:
    lines = ["# Suite keys", "",
             "Generated from the typed configuration dataclasses (`bench/spec/suite.py`, `bench/spec/search.py`, "
             "`algorithms/`, `datasets/`) when the site is built: every key a suite file may give, its type, default "
             "and what the code's docstrings and comments say of it. A suite file is checked whole against these "
             "before anything runs (unknown keys are refused with a \"did you mean\"). The [suite file guide]"
             "(../suites.md) explains them with an example per section.", ""]
    for prefix, cls, keys in suite_sections():
        lines += [f"## `{prefix or 'top level'}`", "", f"`{cls.__module__}.{cls.__qualname__}`", "", *_doc(cls),
                  *_table(keys, prefix), ""]
    from bench.spec.search import ParamSpec

    lines += ["## `search.space.<parameter>` and `search.learners.<label>.<parameter>`", "",
              "A parameter is `<section>.<option>` with section `learner`, `training` or `backbone`; its range or "
              "choices:", "", *_doc(ParamSpec), *_table(search_parameter_keys(), "search.space.<parameter>"), ""]
    lines += ["## Learner options", "", "What `learners[].config` and `grid.options` may set, per learner "
              "(`meta-bench list` prints the same defaults). A preset's fixed options are refused.", ""]
    for name, learner, keys in learner_options():
        fixed = getattr(learner.Config, "FIXED", {})
        lines += [f"### `{name}`", "", (inspect.getdoc(learner) or "").splitlines()[0], ""]
        if fixed:
            lines += ["Fixed: " + ", ".join(f"`{k}={v!r}`" for k, v in fixed.items()), ""]
        lines += [*_table(keys, "learners[].config"), ""]
    lines += ["## Dataset options", "", "What `dataset.options` (and `evaluation.dataset.options`) may set, per "
              "dataset (`meta-bench datasets` says whether its data is there).", ""]
    for name, options, keys in dataset_options():
        lines += [f"### `{name}`", "", f"`{options.__module__}.{options.__qualname__}`", "", *_doc(options),
                  *_table(keys, "dataset.options"), ""]
    return "\n".join(lines)


# -- the command line ---------------------------------------------------------------------------------------------


class _Built(Exception):
    """Carries the parser out of ``bench.__main__.main`` before it parses anything."""


def cli_parser() -> argparse.ArgumentParser:
    """The parser `python -m bench` builds, exactly: ``main`` is run until it would parse its arguments.
    (``main`` builds its parser inline; a ``build_parser()`` there would make this a plain call.)"""
    from unittest import mock

    from bench.__main__ import main

    def stop(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        raise _Built(parser)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop):
        try:
            main([])
        except _Built as built:
            return built.args[0]
    raise RuntimeError("bench.__main__.main returned without parsing its arguments")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """Command -> (its one-line help, its parser), in the order `--help` lists them."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    return {name: (helps.get(name, ""), sub) for name, sub in action.choices.items()}


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments a user may give (help and internal ones left out)."""
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def _argument_row(action: argparse.Action) -> str:
    if action.option_strings:
        name = ", ".join(f"`{o}`" for o in action.option_strings)
        if action.nargs != 0:
            name += f" `{action.metavar or action.dest.upper()}`"
    else:
        name = f"`{action.metavar or action.dest}`" + (" (any number)" if action.nargs in ("*", "+") else "")
    extra = []
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        extra.append("choices: " + ", ".join(f"`{c}`" for c in action.choices))
    if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
        extra.append(f"default: `{action.default}`")
    text = " ".join([action.help or ""] + ([f"({'; '.join(extra)})"] if extra else [])).replace("|", "\\|")
    return f"| {name} | {text} |"


def cli_page() -> str:
    parser = cli_parser()
    lines = ["# Command line", "",
             "Generated from the argparse parser of `python -m bench` (the same as `meta-bench`, installed with the "
             "project) when the site is built. Exit status of every command: 0 done, 1 failures (listed), 2 bad "
             "input (nothing run or written), 130 interrupted.", "",
             "```text", parser.format_usage().strip(), "```", ""]
    for name, (summary, sub) in subcommands(parser).items():
        lines += [f"## `{name}`", "", summary[:1].upper() + summary[1:] + ".", "", "```text",
                  sub.format_usage().strip(), "```", "", "| argument | what it does |", "|---|---|",
                  *[_argument_row(action) for action in documented_actions(sub)], ""]
    return "\n".join(lines)


def all_cli_flags() -> dict[str, list[str]]:
    """Command -> every option string and positional a user may give it."""
    return {name: [o for a in documented_actions(sub) for o in (a.option_strings or [a.metavar or a.dest])]
            for name, (_, sub) in subcommands(cli_parser()).items()}


# -- metrics and tags ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Constant:
    """A module-level string constant of a schema module, with the comment beside or above it."""

    names: tuple[str, ...]
    values: tuple[str, ...]
    about: str
    group: str  # the ``# -- group --`` heading it sits under ("" before the first)


def schema_constants(module: Any) -> list[Constant]:
    """Every string (or tuple of strings) a schema module assigns at its top level, with its comment and group."""
    source = inspect.getsource(module)
    lines, comments = source.splitlines(), _comments(source)
    headings = {n: text.strip("- ") for n, text in comments.items() if text.startswith("--")}
    found = []
    for node in ast.parse(source).body:
        group = next((headings[n] for n in sorted(headings, reverse=True) if n < node.lineno), "")
        if not isinstance(node, ast.Assign):
            continue
        targets = node.targets[0]
        names = [t.id for t in (targets.elts if isinstance(targets, ast.Tuple) else [targets])
                 if isinstance(t, ast.Name)]
        values = [getattr(module, n) for n in names]
        if not names or not all(isinstance(v, str) for v in values):
            continue
        above, line = [], node.lineno - 1
        while line >= 1 and lines[line - 1].startswith("#") and not comments[line].startswith("--"):
            above.insert(0, comments[line])
            line -= 1
        about = " ".join(above + ([comments[node.end_lineno]] if node.end_lineno in comments else []))
        found.append(Constant(tuple(names), tuple(values), about, group))
    return found


def _functions(module: Any) -> list[tuple[str, str]]:
    """(signature, first docstring paragraph) of a schema module's public functions: the names they build."""
    return [(f"{name}{inspect.signature(fn)}", " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split()))
            for name, fn in vars(module).items()
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_")]


def metric_objects() -> list[tuple[str, Any]]:
    """(where, Metric) of every ``Metric`` ``bench.core.metrics`` defines: the scores and the costs."""
    from bench.core import metrics

    found = [(f"SCORES[{key!r}]", metric) for key, metric in metrics.SCORES.items()]
    found += [(name, value) for name, value in vars(metrics).items() if isinstance(value, metrics.Metric)]
    return found


def metrics_page() -> str:
    from bench.core import metrics, tags

    lines = ["# Metrics and tags", "",
             "Generated from `bench/core/metrics.py` and `bench/core/tags.py`, the one schema of everything a cell "
             "logs to MLflow, when the site is built.", "", "## Metrics", "", *_doc_of(metrics),
             "| MLflow name | defined as | shown as | unit | better | kind |", "|---|---|---|---|---|---|"]
    for where, m in metric_objects():
        lines.append(f"| `{m.name}` | `{where}` | {m.label} | {m.unit or '-'} | {m.direction} | {m.kind} |")
    lines += ["", "Other names the measurement writes:", "", "| name | defined as | what it is |", "|---|---|---|"]
    lines += _constant_rows(schema_constants(metrics))
    lines += ["", "Where a cell's wall-clock went (`time_<phase>_seconds`, `TIME_PHASES`):", "",
              "| metric | phase |", "|---|---|"]
    lines += [f"| `{metrics.time_in(name)}` | {label} |" for name, label in metrics.TIME_PHASES.items()]
    lines += ["", "Names built from a pattern:", "", "| function | what it names |", "|---|---|"]
    lines += [f"| `{sig}` | {doc} |" for sig, doc in _functions(metrics)]
    lines += ["", "## Tags", "", *_doc_of(tags)]
    groups: dict[str, list[Constant]] = {}
    for constant in schema_constants(tags):
        groups.setdefault(constant.group, []).append(constant)
    for group, constants in groups.items():
        lines += [f"### {group[:1].upper() + group[1:]}" if group else "### Other", "",
                  "| tag or value | defined as | what it is |", "|---|---|---|", *_constant_rows(constants), ""]
    lines += ["### Tags built from a pattern", "", "| function | what it names |", "|---|---|"]
    lines += [f"| `{sig}` | {doc} |" for sig, doc in _functions(tags)]
    return "\n".join(lines) + "\n"


def _doc_of(module: Any) -> list[str]:
    return [" ".join((module.__doc__ or "").split()), ""]


def _constant_rows(constants: list[Constant]) -> list[str]:
    return [f"| {', '.join(f'`{v}`' for v in c.values)} | {', '.join(f'`{n}`' for n in c.names)} | "
            f"{c.about.replace('|', chr(92) + '|')} |" for c in constants]


def all_metric_and_tag_names() -> list[str]:
    from bench.core import metrics, tags

    names = [m.name for _, m in metric_objects()]
    names += [v for module in (metrics, tags) for c in schema_constants(module) for v in c.values]
    return names


PAGES: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli_page,
    "reference/suite-keys.md": suite_page,
    "reference/metrics-and-tags.md": metrics_page,
}


def on_files(files, config):
    """MkDocs hook (``hooks`` in mkdocs.yml): the generated pages join the site's files, written nowhere on disk."""
    from mkdocs.structure.files import File

    for path, page in PAGES.items():
        files.append(File.generated(config, path, content=page()))
    return files
