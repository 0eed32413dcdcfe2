"""Shared plumbing for the click command-line tools: one-line errors and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
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


class OneLineCommand(click.Command):
    """Usage errors (unknown option, bad value) as one ``error: ...`` line and exit 2, like every BfmError.

    Click's default prints the usage block and a hint over several lines. Every bfm tool uses this class.
    """

    # click types main() with overloads on standalone_mode; this override always runs standalone
    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            fail(exc.format_message())
        except click.Abort:
            fail("aborted")
        sys.exit(code if isinstance(code, int) else 0)


def detector_option(func: F) -> F:
    """``--detector NAME|PATH``, the same in every tool that detects faces (``bfm_deploy.detect.choice``)."""
    from .detect.choice import DETECTOR_HELP, check_choice

    def check(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
        try:
            return check_choice(value)
        except BfmError as exc:
            raise click.BadParameter(str(exc)) from None

    return click.option("--detector", default="auto", show_default=True, metavar="NAME|PATH", callback=check,
                        help=DETECTOR_HELP)(func)
