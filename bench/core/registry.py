"""A registry is a dict and a decorator: one source of truth, duplicates refused, near names suggested."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._facts: dict[str, dict[str, str]] = {}

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

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                                   f"known: {', '.join(self.names())}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]
