"""API keys: kept as sha256 digests only, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from ..errors import BfmError

HASHED = "sha256:"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_key_file(path: Path) -> tuple[str, ...]:
    """One key per line: the key itself, or ``sha256:<hex digest>`` so the file need not hold secrets;
    blank lines and ``#`` comments skipped. Returns the digests."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BfmError(f"--api-key-file {path}: cannot read ({exc.strerror or exc})") from None
    digests = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(HASHED):
            value = line[len(HASHED):].lower()
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise BfmError(f"{path}:{number}: a sha256: line needs 64 hex digits")
            digests.append(value)
        else:
            digests.append(digest(line))
    if not digests:
        raise BfmError(f"--api-key-file {path} holds no key")
    return tuple(digests)


def key_accepted(presented: str | None, digests: tuple[str, ...]) -> bool:
    """Whether ``presented`` is one of the keys; every digest is compared, so the time says nothing."""
    if presented is None:
        return False
    candidate = digest(presented)
    accepted = False
    for known in digests:
        accepted |= hmac.compare_digest(candidate, known)
    return accepted
