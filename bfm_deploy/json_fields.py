"""Typed reads from a JSON document (a bundle manifest, a gallery's index state) that fail with a one-line
``BfmError`` naming the field and what to do about it.

``Fields`` wraps one JSON object and its dotted path (``models.full``); each getter checks presence and type,
so a schema's ``from_dict`` reads as a list of its fields. ``rest`` hands back the keys nobody asked for, which
the schemas keep verbatim: a manifest read and written again is the same manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BfmError

REEXPORT = "re-export the bundle with bfm-export"
_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list"}


@dataclass(frozen=True)
class Where:
    """A place in a JSON document: the document (its file), the dotted path of one field in it, and the remedy
    every error about this document ends with (a bundle is re-exported)."""

    source: str
    path: str = ""
    remedy: str = REEXPORT

    def key(self, name: str) -> Where:
        return Where(self.source, f"{self.path}.{name}" if self.path else name, self.remedy)

    def fail(self, problem: str) -> BfmError:
        return BfmError(f"{self.source}: field '{self.path}' {problem}; {self.remedy}")

    def wrap(self, exc: BfmError) -> BfmError:
        """A domain check's own message (``DetectorSpec``, ``parse_chain``), placed in this document."""
        return BfmError(f"{self.source}: {exc}; {self.remedy}")


@dataclass
class Fields:
    """One JSON object of the document, read through typed getters that remember which keys they read."""

    obj: dict[str, Any]
    where: Where
    _read: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, value: Any, where: Where) -> Fields:
        if not isinstance(value, dict):
            raise where.fail(f"must be an object, got {type(value).__name__}")
        return cls(value, where)

    def has(self, key: str) -> bool:
        return key in self.obj

    def at(self, key: str) -> Where:
        return self.where.key(key)

    def fail(self, key: str, problem: str) -> BfmError:
        return self.at(key).fail(problem)

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        """The value of ``key``, which must be present and of ``kind`` (``True`` is not an integer here)."""
        self._read.add(key)
        if key not in self.obj:
            raise self.fail(key, "is missing")
        value = self.obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"must be {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"must be {_kind_name(kinds)}, got {type(value).__name__}")
        return value

    def optional(self, key: str, kind: type | tuple[type, ...]) -> Any:
        """Like ``get``, or None when ``key`` is absent."""
        return self.get(key, kind) if key in self.obj else None

    def text(self, key: str) -> str:
        return str(self.get(key, str))

    def integer(self, key: str) -> int:
        return int(self.get(key, int))

    def number(self, key: str) -> float:
        # Kept as JSON gave it (127 stays an int): writing the manifest back must not turn 127 into 127.0.
        value: float = self.get(key, (int, float))
        return value

    def child(self, key: str) -> Fields:
        """The nested object ``key``, read the same way."""
        return Fields(self.get(key, dict), self.at(key))

    def file_name(self, key: str) -> str:
        # A manifest must not point outside its own folder.
        name = self.text(key)
        if not name or Path(name).name != name or name in (".", ".."):
            raise self.fail(key, f"must be a file name inside the bundle, got {name!r}")
        return name

    def sha256(self, key: str) -> str:
        value = self.text(key)
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise self.fail(key, "must be a lowercase hex sha256")
        return value

    def rest(self) -> dict[str, Any]:
        """The keys no getter read, in the document's order."""
        return {key: value for key, value in self.obj.items() if key not in self._read}


def _kind_name(kinds: tuple[type, ...]) -> str:
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
