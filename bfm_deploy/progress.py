"""Progress bars for long work: rate and ETA on a terminal, nothing in logs, pipes and CI output."""

from __future__ import annotations

import sys
from typing import Any

import click
from tqdm import tqdm


def progress(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, drawn only when stderr is a terminal (``disable=None``) and ``enabled``.

    Carriage-return redraws written to a file become one very long line, and an ``error:`` line printed after
    them would be glued onto it."""
    return tqdm(iterable, file=sys.stderr, disable=None if enabled and not quiet() else True, **kwargs)


QUIET_KEY = "bfm.quiet"


def quiet() -> bool:
    """Whether the running tool was given ``--quiet`` (kept in its click context: no process-wide state, and
    the Python API, which runs outside any command, is never quiet)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().meta.get(QUIET_KEY))


def stage(message: str) -> None:
    """One line on stderr for a stage of long work when no progress bar is drawn (stderr is not a terminal):
    a log then still shows what the tool is doing. Silenced by ``--quiet``; on a terminal the bars say it."""
    if not quiet() and not sys.stderr.isatty():
        click.echo(message, err=True)
