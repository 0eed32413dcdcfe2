"""One registry mechanism for everything chosen by name: models, backends, detectors, eval protocols, bench modes.

    BACKENDS: Registry[BackendEntry] = Registry("backend")
    BACKENDS.register("ort", entry)             # or @BACKENDS.decorate("ort") on a class or factory
    BACKENDS.get("ort")                         # unknown names: one BfmError listing the choices

Each registry is a module-level table filled when its module is imported (timm's ``@register_model``): the
names are known statically, in the order they were registered, and nothing is rebuilt on a call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import BfmError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what an entry is, for messages: "model", "backend", ...
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")  # a programming error, not user input
        self._entries[name] = entry
        return entry

    def decorate(self, name: str) -> Callable[[T], T]:
        """``@REGISTRY.decorate(name)``: register the decorated object itself."""
        return lambda entry: self.register(name, entry)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise BfmError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
