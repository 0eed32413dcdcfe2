"""Shared plumbing for the click command-line tools: one-line errors and exit code 2."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from .errors import BfmError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 2


def fail(message: str) -> NoReturn:
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(EXIT_ERROR)


def debug_enabled() -> bool:
    return os.environ.get("BFM_DEBUG", "") not in ("", "0")


def one_line_errors(func: F) -> F:
    """Turn every failure into ``error: ...`` on stderr and exit 2, never a traceback and never exit 1
    (which ``bfm-verify`` uses for "different people").

    ``BfmError`` is the expected case; OSError and ValueError from libraries (a file vanishing mid-run,
    a malformed option value) are reported the same way. Anything else is a bug: its line says so, and
    ``BFM_DEBUG=1`` prints the traceback as well.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own: OneLineCommand turns them into one line
        except BfmError as exc:
            fail(str(exc))
        except (OSError, ValueError) as exc:
            fail(f"{type(exc).__name__}: {exc}")
        except KeyboardInterrupt:
            fail("interrupted")
        except Exception as exc:  # a bug: still one line and exit 2, the traceback on request
            if debug_enabled():
                traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            fail(f"unexpected error ({type(exc).__name__}: {first}); this is a bug in bfm: rerun with "
                 "--debug (or BFM_DEBUG=1) for the traceback and report it")

    return wrapper  # type: ignore[return-value]


def _enable_debug(_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        os.environ["BFM_DEBUG"] = "1"  # this process only: the tool's own run, read by one_line_errors


class _OneLineMain:
    """``main`` for click commands and groups: usage errors as one line, exit 2 (see ``OneLineCommand``)."""

    # click types main() with overloads on standalone_mode; this override always runs standalone
    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)  # type: ignore[misc]
        except click.ClickException as exc:
            fail(exc.format_message())
        except click.Abort:
            fail("aborted")
        sys.exit(code if isinstance(code, int) else 0)


class OneLineCommand(_OneLineMain, click.Command):
    """Usage errors (unknown option, bad value) as one ``error: ...`` line and exit 2, like every BfmError.

    Click's default prints the usage block and a hint over several lines. Every bfm tool uses this class,
    which also gives each of them ``--debug`` (the traceback of an unexpected error, like ``BFM_DEBUG=1``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True,
                                        callback=_enable_debug,
                                        help="Print the traceback of an unexpected error (or set BFM_DEBUG=1)."))


class OneLineGroup(_OneLineMain, click.Group):
    """A tool of subcommands (``bfm-gallery enroll``) with ``OneLineCommand``'s one-line usage errors; its
    subcommands are ``OneLineCommand`` too."""

    command_class = OneLineCommand
