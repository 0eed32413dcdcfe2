"""Shared plumbing for the click command-line tools: one-line errors and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from .errors import BfmError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 2


def fail(message: str) -> NoReturn:
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(EXIT_ERROR)


def one_line_errors(func: F) -> F:
    """Turn expected failures into ``error: ...`` on stderr and exit 2, never a traceback.

    ``BfmError`` is the expected case; OSError and ValueError from libraries (a file vanishing mid-run,
    a malformed option value) are reported the same way. Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BfmError as exc:
            fail(str(exc))
        except (OSError, ValueError) as exc:
            fail(f"{type(exc).__name__}: {exc}")
        except KeyboardInterrupt:
            fail("interrupted")

    return wrapper  # type: ignore[return-value]
