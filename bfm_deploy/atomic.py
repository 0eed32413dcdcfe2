"""Write artifacts so that an interruption never leaves a half-written file or folder behind.

Temporaries are named ``.NAME.<pid>.<random>.tmp`` beside the artifact: the next write of the same artifact
removes those whose process is gone (a kill -9 leaves them), never a live writer's. Replacing a folder takes
two renames (old aside as ``.NAME.old``, new in place); if a crash comes between them, ``recover`` (called by
the next ``atomic_dir`` and by ``Bundle.load``) puts the old folder back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    The temporary file lives in the same folder so the rename is atomic on POSIX file systems.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    fd, tmp_name = tempfile.mkstemp(prefix=_prefix(final), suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the artifact the permissions a plain open() would have.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        # again: writers that replace the file (safetensors does) leave it at mkstemp's private 0600
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; it replaces ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final)
    remove_stale_temporaries(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists (pass overwrite=True to replace it)")
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(final), suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if final.exists():
            old = _old(final)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prefix(final: Path) -> str:
    return f".{final.name}.{os.getpid()}."


def _old(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``final`` left by processes that no longer run; returns what was removed."""
    final = Path(final)
    return remove_stale_temporaries_in(final.parent, f".{glob_escape(final.name)}.*.tmp")


def remove_stale_temporaries_in(folder: str | os.PathLike[str], pattern: str = ".*.tmp") -> list[Path]:
    """Remove the temporaries in ``folder`` (matching ``pattern``) whose writing process no longer runs."""
    removed = []
    for candidate in Path(folder).glob(pattern):
        parts = candidate.name.split(".")  # "", NAME..., pid, random, "tmp": random names hold no dots
        if len(parts) < 5 or not parts[-3].isdigit() or _alive(int(parts[-3])):
            continue  # a live writer's, or not ours
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def recover(final: str | os.PathLike[str]) -> bool:
    """Undo a folder replacement interrupted between its two renames: the old folder goes back in place.
    Returns whether anything was restored. (With ``final`` present, a leftover ``.old`` is simply removed.)"""
    final = Path(final)
    old = _old(final)
    if not old.exists():
        return False
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        return False
    os.replace(old, final)
    return True


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
