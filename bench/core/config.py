"""Typed configuration: mappings (from YAML) onto frozen dataclasses that reject unknown keys."""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from typing import Annotated, Any, Mapping, TypeVar

import yaml

from bench.core.registry import did_you_mean

C = TypeVar("C")
MAX_YAML_NODES = 100_000  # a document's nodes with every alias expanded; real suites have a few hundred
MAX_YAML_DEPTH = 50  # nesting levels; real suites have five or six


class ConfigError(ValueError):
    """Bad user configuration; the message names the key, the value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Within:
    """A bound on an integer field, written ``Annotated[int, Within(low, high, why)]``."""

    low: int
    high: int
    why: str  # what the bound protects, for the message


class NonFiniteAllowed:
    """Marks a float field that may be nan or +-inf (``Annotated[float, NON_FINITE_ALLOWED]``); others may not."""


NON_FINITE_ALLOWED = NonFiniteAllowed()


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlong = 3, 200, 200, 60
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 10
    return short


_SHORT = _short_repr()


def shown(value: Any) -> str:
    """``repr(value)`` cut to a few hundred characters, without building the whole repr first: a message quotes a
    value, it must not reproduce a huge one (an alias-expanded list of a million items)."""
    return _SHORT.repr(value)


class _SuiteLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what would otherwise pass silently or swamp the machine: a key given twice in
    one mapping (PyYAML keeps the last, so a second ``learners:`` would replace the first) and a document whose
    aliases expand to more than MAX_YAML_NODES nodes ("billion laughs": a few hundred bytes, gigabytes once used),
    and one nested deeper than MAX_YAML_DEPTH (PyYAML's scanner slows quadratically with depth, then its composer
    overflows the stack)."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                              self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        size = _expanded_size(node, {}, set())
        if size > MAX_YAML_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"the document expands to {size} nodes through its aliases; at most {MAX_YAML_NODES} "
                            f"are allowed", node.start_mark)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding a key is not a duplicate
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            if not isinstance(key, typing.Hashable):  # PyYAML's own construct_mapping refuses it, with its line
                continue
            if key in first_lines:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found the key {shown(key)} twice (lines {first_lines[key]} and {line}); a key may appear once "
                    f"in a mapping", key_node.start_mark)
            first_lines[key] = line
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes of ``node`` with aliases expanded (aliases share one node object, so ``sizes`` memoises by identity)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise yaml.constructor.ConstructorError(None, None, "an alias refers to a node that contains it: a recursive "
                                                            "structure cannot be a configuration", node.start_mark)
    open_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    sizes[id(node)] = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(id(node))
    return sizes[id(node)]


def yaml_documents(text: str, source: str) -> list[Any]:
    """The non-empty documents of a YAML text: the one way configuration YAML is read."""
    loader = _SuiteLoader(text)
    loader.name = source  # PyYAML's marks then name the file rather than "<unicode string>"
    try:
        documents = []
        while loader.check_data():
            documents.append(loader.get_data())
        return [d for d in documents if d is not None]
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None


def field_names(cls: type) -> list[str]:
    """The keys a config file may give: the fields set at construction."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def check_keys(mapping: Mapping[str, Any], allowed: list[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {shown(key)}{did_you_mean(str(key)[:200], allowed)}; "
                              f"known keys: {', '.join(allowed)}")


def _same_shape(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is written as ``annotation`` is (a list for a list or tuple, a mapping for a dataclass or
    dict): in a union, the option whose error names what is wrong inside the value."""
    origin = typing.get_origin(annotation) or annotation
    if isinstance(value, (list, tuple)):
        return origin in (list, tuple)
    if isinstance(value, Mapping):
        return origin is dict or dataclasses.is_dataclass(annotation)
    return False


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        raise TypeError(f"{where}: Any-typed configuration fields are not allowed")
    if origin is Annotated:
        return _annotated(value, args[0], args[1:], where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append((option, str(error)))
        shaped = [why for option, why in errors if _same_shape(value, option)]  # a list for the list option: its error
        if len(errors) == 1 or len(shaped) == 1:
            raise ConfigError((shaped or [errors[0][1]])[0])
        raise ConfigError(f"{where}: {shown(value)} fits none of {annotation}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {shown(value)} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {shown(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return origin(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {', '.join(field_names(annotation))}, got "
                              f"{shown(value)}")
        return from_mapping(annotation, value, where)
    if annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {shown(value)}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {shown(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {shown(value)}")
        return value
    if annotation is float:
        return _float(value, where, finite=True)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {shown(value)}")
        return value
    # a plugin's options class is the user's code: said like any bad input (exit 2), not a traceback
    raise ConfigError(f"{where}: its class declares the type {annotation!r}, which a suite cannot be read into; "
                      f"declare bool, int, float, str, dict, a Literal, an Optional, a dataclass, or a list or tuple of "
                      f"these (tuple[float, float], not a bare tuple)")


def _float(value: Any, where: str, finite: bool) -> float:
    """A number as a float; nan and +-inf only where ``finite`` is false (they pass every ``<= 0`` range check and
    then fail, or silently poison, every cell at run time)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"{where}: {shown(value)} is too large for a float") from None
    if finite and not math.isfinite(number):
        raise ConfigError(f"{where}: {number} is not allowed; expected a finite number")
    return number


def _annotated(value: Any, annotation: Any, constraints: tuple[Any, ...], where: str) -> Any:
    if annotation is float and NON_FINITE_ALLOWED in constraints:
        return _float(value, where, finite=False)
    value = _coerce(value, annotation, where)
    for bound in (c for c in constraints if isinstance(c, Within)):
        if not bound.low <= value <= bound.high:
            raise ConfigError(f"{where}: {shown(value)} is not allowed; it must lie in [{bound.low}, {bound.high}] "
                              f"({bound.why})")
    return value


def from_mapping(cls: type[C], mapping: Mapping[str, Any] | None, where: str) -> C:
    """Build dataclass ``cls`` from ``mapping``; unknown keys, wrong types and rejected values raise ConfigError."""
    mapping = dict(mapping or {})
    fixed = getattr(cls, "FIXED", {})  # a learner preset's defining options (algorithms/presets.py)
    for key in mapping:
        if key in fixed:
            raise ConfigError(f"{where}.{key}: fixed at {shown(fixed[key])} by this learner (its definition); "
                              f"the options it leaves free: {', '.join(field_names(cls))}")
    check_keys(mapping, field_names(cls), where)
    hints = typing.get_type_hints(cls, include_extras=True)  # keeps the Annotated bounds
    values = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in mapping.items()}
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}: {error}") from None


def to_mapping(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)



def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
