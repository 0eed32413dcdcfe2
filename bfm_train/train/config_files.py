"""Reading a config file: YAML whose ``base: other.yaml`` is resolved before the typed config is built.

A config may start from another one (``base:``, a path relative to the config's own folder; chains allowed). The
child's mappings merge key by key over the base's, at every depth; any other value (a scalar, a list, null)
replaces the base's. Nothing is deleted: a key set back to its default gives the same typed config as a key
never set, so no config needs a delete. ``bfm_train.train.config.load_config`` is the one caller, so bfm-train,
checkpoints, config.yaml and reports all see the resolved config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bfm_deploy.errors import BfmError

BASE_KEY = "base"


def merge_config(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``: mappings merge recursively, every other value replaces; neither input changes."""
    merged = dict(base)
    for key, value in child.items():
        below = merged.get(key)
        merged[key] = merge_config(below, value) if isinstance(value, dict) and isinstance(below, dict) else value
    return merged


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML config file with its ``base:`` chain resolved (the ``base`` key itself removed)."""
    return _resolve(Path(path), [])


def _resolve(path: Path, chain: list[Path]) -> dict[str, Any]:
    # chain: the files that led here, child first, as written (for the message) - compared by resolved path so
    # that ./a.yaml and a.yaml are the same file
    if path.resolve() in [p.resolve() for p in chain]:
        raise BfmError(f"{chain[0]}: base cycle {' -> '.join(str(p) for p in [*chain, path])}")
    values = _read_mapping(path, chain[-1] if chain else None)
    if BASE_KEY not in values:
        return values
    base = values.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise BfmError(f"{path}: base must be a config file name (relative to {path.parent}), not {base!r}")
    return merge_config(_resolve(path.parent / base, [*chain, path]), values)


def _read_mapping(path: Path, child: Path | None) -> dict[str, Any]:
    of_child = f" (the base of {child})" if child is not None else ""
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BfmError(f"{path}: cannot read config ({exc.strerror}){of_child}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise BfmError(f"{path}:{where} invalid YAML{of_child}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise BfmError(f"{path}: a config must be a mapping of keys to values{of_child}")
    return loaded
