"""What ``--bundle`` and ``--compare`` name: a bundle evaluated with routing, or one of its extractors alone.

Spec grammar (``--compare NAME=SPEC``, and ``--bundle SPEC``)::

    SPEC    := PATH [":" NETWORK]
    NETWORK := "routed" | "full" | "partial"

``PATH`` is a bundle folder. Without ``:NETWORK`` (or with ``:routed``) the bundle runs as the paper's
system: its classifier picks the route of each pair (``full`` when both faces are unmasked, else
``partial``). ``:full`` or ``:partial`` uses that single extractor for every pair and never runs the
classifier, which is how the paper's baselines (one ArcFace network for everything) are evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import BfmError

Mode = Literal["routed", "full", "partial"]
MODES: tuple[Mode, ...] = ("routed", "full", "partial")
SINGLE_BUNDLE_NAME = "bundle"


@dataclass(frozen=True)
class Method:
    name: str
    bundle: Path
    mode: Mode

    @property
    def routed(self) -> bool:
        return self.mode == "routed"


def parse_spec(name: str, spec: str) -> Method:
    """``PATH[:NETWORK]`` -> Method; a trailing ``:word`` that is not a network stays part of the path."""
    spec = spec.strip()
    path, mode = spec, "routed"
    head, sep, tail = spec.rpartition(":")
    if sep and tail in MODES:
        path, mode = head, tail
    if not path:
        raise BfmError(f"bad method spec {spec!r}: expected BUNDLE[:routed|full|partial]")
    return Method(name=name, bundle=Path(path), mode=mode)  # type: ignore[arg-type]


def parse_compare(entry: str) -> Method:
    """``NAME=SPEC`` from ``--compare``."""
    name, sep, spec = entry.partition("=")
    if not sep or not name.strip() or not spec.strip():
        raise BfmError(f"bad --compare entry {entry!r}: expected NAME=BUNDLE[:routed|full|partial]")
    return parse_spec(name.strip(), spec)


def collect_methods(bundle: str | None, compare: tuple[str, ...]) -> list[Method]:
    """The methods of one run, in table order: ``--bundle`` first (named ``bundle``), then ``--compare``."""
    methods = [parse_spec(SINGLE_BUNDLE_NAME, bundle)] if bundle else []
    methods += [parse_compare(entry) for entry in compare]
    if not methods:
        raise BfmError("nothing to evaluate: pass --bundle and/or --compare NAME=SPEC")
    names = [m.name for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BfmError(f"method names must be unique, repeated: {', '.join(duplicates)}")
    for method in methods:
        if not method.bundle.is_dir():
            raise BfmError(f"bundle {method.bundle} not found (method {method.name!r})")
    return methods
