"""A registry is a dict and a decorator: one source of truth, duplicates refused, near names suggested.

A registry may also take entries from outside this repository (``bench.core.plugins``): names of the entry points
of its group in installed distributions, and ``module:attribute`` import paths, each loaded when first named.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from bench.core import plugins

T = TypeVar("T")


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class AmbiguousNameError(UnknownNameError):
    """A name two sources offer (a built-in and an entry point, or two distributions): refused, never one chosen."""


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str | None = None,
                 adopt: Callable[[str, object], tuple[T, dict[str, str]]] | None = None):
        """``group``: the entry-point group plugins of this kind are found in; ``adopt(name, loaded)``: the entry a
        loaded plugin object becomes and its facts (a wrong kind of object raises ``plugins.PluginError``)."""
        self.kind = kind
        self.group = group
        self.adopt = adopt
        self._entries: dict[str, T] = {}
        self._facts: dict[str, dict[str, str]] = {}
        self._unambiguous: set[str] = set()  # names checked once: the entry points are read once per process

    def register(self, name: str, **facts: str) -> Callable[[T], T]:
        """Register under ``name``; ``facts`` are recorded with the entry (a learner's algorithm), so nothing has
        to be parsed out of its name."""
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            self._facts[name] = dict(facts)
            return entry

        return add

    def fact(self, name: str, key: str, default: str | None = None) -> str | None:
        self[name]  # an unknown name is refused with suggestions
        return self._facts[name].get(key, default)

    def registered_as(self, entry: T) -> list[str]:
        """The names ``entry`` is registered under already (a plugin module may register its own classes)."""
        return [name for name, known in self._entries.items() if known is entry]

    def origin(self, name: str) -> str:
        """Where an entry comes from: "built in", the plugin's entry point or import path, or the outside module
        that registered it, with its source file."""
        recorded = self.fact(name, "origin")
        module = getattr(self._entries[name], "__module__", "")
        if recorded is None and plugins.is_plugin_module(module):
            return f"registered by module {module} ({plugins.where(module)})"
        return recorded or "built in"

    def _plugin(self, name: str) -> bool:
        """Load ``name`` from outside the repository where it names a plugin; False where it names none."""
        if self.adopt is None or not isinstance(name, str):  # `x in registry` may ask about anything
            return False
        try:
            found = plugins.find(self.kind, self.group, name)
            if found is None:
                return False
            entry, facts = self.adopt(name, found[0])
        except plugins.PluginError as error:  # refused like any unknown name, with the cause
            raise UnknownNameError(f"{error}{plugins.HOW.format(kind=self.kind)}") from None
        self.register(name, origin=found[1], **facts)(entry)
        return True

    def _refuse_ambiguous(self, name: str) -> None:
        """Refuse a name offered twice: by entry points of more than one distribution, or by an entry point and an
        entry registered otherwise (built in, or by a module)."""
        offers = plugins.offering(self.group, name) if isinstance(name, str) else []
        if not offers:
            return
        if len(offers) > 1:
            raise AmbiguousNameError(f"{self.kind} {name!r} is offered by the entry points of {' and '.join(offers)}; "
                                     f"uninstall one, or name the one meant by its import path")
        if name in self._entries and not self._facts[name].get("origin", "").startswith("entry point of"):
            module = getattr(self._entries[name], "__module__", "")
            other = f"one registered by module {module}" if plugins.is_plugin_module(module) else "a built-in one"
            raise AmbiguousNameError(f"{self.kind} {name!r}: the entry point of {offers[0]} has the name of {other}; "
                                     f"rename the entry point, or name the plugin by its import path")

    def __getitem__(self, name: str) -> T:
        if name not in self._unambiguous:
            self._refuse_ambiguous(name)
        if name not in self._entries and not self._plugin(name):
            raise UnknownNameError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                                   f"known: {', '.join(self.names())}"
                                   + (plugins.HOW.format(kind=self.kind) if self.adopt else ""))
        self._unambiguous.add(name)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        try:
            self[name]
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        """Every registered name and every installed plugin's (loaded when first named)."""
        return sorted(set(self._entries) | set(plugins.entry_point_names(self.group)))

    def loaded(self) -> list[tuple[str, T]]:
        """The entries registered so far (plugins not yet named are not loaded for this)."""
        return sorted(self._entries.items())

    def items(self) -> list[tuple[str, T]]:
        return [(name, self[name]) for name in self.names()]
