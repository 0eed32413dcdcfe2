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


def _bundle_argument(args: Sequence[str]) -> str | None:
    """The value of ``--bundle`` on a command line, wherever it stands (``--bundle B`` or ``--bundle=B``)."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--bundle" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--bundle="):
            return arg.split("=", 1)[1]
    return None


def version_lines(ctx: click.Context, args: Sequence[str]) -> list[str]:
    """What ``--version`` prints: the tool and bfm's version, then, for a tool that loads a bundle, the bundle
    it would load (``--bundle``, else the default) with its name and digest."""
    from . import __version__

    lines = [f"{ctx.command_path} (bfm) {__version__}"]
    command = ctx.command
    if any(isinstance(param, click.Option) and "--bundle" in param.opts for param in command.params):
        from .bundle import Bundle, default_bundle

        path = _bundle_argument(args) or default_bundle()
        bundle = Bundle.load(path)
        lines.append(f"bundle {bundle.name} at {bundle.root} (manifest sha256 {bundle.digest[:12]})")
    return lines


def _asks_version(args: Sequence[str], group: bool) -> bool:
    """Whether ``--version`` is on the command line (before ``--``); a group answers it only before its
    subcommand's name, after which the subcommand answers it itself."""
    for arg in args:
        if arg == "--version":
            return True
        if arg == "--" or (group and not arg.startswith("-")):
            return False
    return False


class _OneLineMain:
    """``main`` for click commands and groups: usage errors as one line, exit 2 (see ``OneLineCommand``), and
    ``--version`` answered before the arguments are checked (``bfm-verify --version`` needs no images)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if _asks_version(args, group=isinstance(self, click.Group)):
            try:
                for line in version_lines(ctx, args):
                    click.echo(line)
            except BfmError as exc:
                fail(str(exc))
            ctx.exit(0)
        return super().parse_args(ctx, args)  # type: ignore[misc, no-any-return]

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
        self.params.append(_version_option())


class OneLineGroup(_OneLineMain, click.Group):
    """A tool of subcommands (``bfm-gallery enroll``) with ``OneLineCommand``'s one-line usage errors; its
    subcommands are ``OneLineCommand`` too."""

    command_class = OneLineCommand

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_version_option())


def _version_option() -> click.Option:
    # Listed in --help; _OneLineMain.parse_args answers it before anything else is parsed.
    return click.Option(["--version"], is_flag=True, expose_value=False,
                        help="Print the version (and the bundle this command would load) and exit.")
