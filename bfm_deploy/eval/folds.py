"""``--folds`` specs: which 1-based folds of a protocol to evaluate (e.g. ``6-10`` or ``1,3,5-7``)."""

from __future__ import annotations

from ..errors import BfmError


def parse_fold_spec(spec: str, available: int) -> list[int]:
    """0-based fold indices for a spec of 1-based folds and ranges, or ``all``; sorted, no duplicates.

    Cross-validation needs a threshold from other folds, so at least two folds must be chosen.
    """
    text = spec.strip()
    if text.lower() == "all":
        return list(range(available))
    chosen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        bounds = part.split("-")
        if not part or len(bounds) > 2 or not all(b.strip().isdigit() for b in bounds):
            raise BfmError(f"bad fold spec {spec!r}: use 1-based folds and ranges such as '6-10' or '1,3,5-7'")
        low, high = int(bounds[0]), int(bounds[-1])
        if low > high:
            raise BfmError(f"bad fold spec {spec!r}: range {part} runs backwards")
        if low < 1 or high > available:
            raise BfmError(f"bad fold spec {spec!r}: folds are numbered 1 to {available}")
        chosen.update(range(low - 1, high))
    if len(chosen) < 2:
        raise BfmError(f"bad fold spec {spec!r}: cross-validation needs at least two folds")
    return sorted(chosen)
