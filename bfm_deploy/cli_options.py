"""The options every bfm tool shares, defined once so that each means the same thing everywhere.

=================  ==============================================================================================
``-h``/``--help``  help, in every tool
``--bundle DIR``   the model bundle; default ``$BFM_BUNDLE``, else the checkout's or the installed demo bundle
``--backend``      ``auto|trt|ort|torch`` (``bfm-bench`` adds ``all``); ``auto`` picks the fastest that works
``--data-dir DIR`` the shared face data; default ``$BFM_DATA``, else ``../shared/data`` beside the checkout
``--detector``     ``auto|bundle|scrfd|yunet|mtcnn|PATH`` (``bfm_deploy.detect.choice``)
``--json``         the result as JSON on stdout (a flag: it never takes the next argument)
``--json-out F``  the result as JSON, written atomically to the file ``F`` (``.json``)
``--plot PATH``    a PNG of the result
``--quiet``        no progress bars and no "wrote ..." notes (errors still print)
``--debug``        the traceback of an unexpected error (``OneLineCommand``)
=================  ==============================================================================================
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .atomic import atomic_write_text
from .backends import BACKEND_NAMES
from .bundle import default_bundle
from .cli_support import OneLineCommand
from .datasets import default_data_dir
from .errors import BfmError
from .progress import QUIET_KEY, quiet

F = TypeVar("F", bound=Callable[..., Any])

STDOUT = "-"
BUNDLE_HELP = ("Model bundle folder (default: $BFM_BUNDLE, else engines/demo of the checkout, else the installed "
               "bfm-demo-bundle).")


def bfm_command(**kwargs: Any) -> Callable[[F], click.Command]:
    """``click.command`` with what every bfm tool has: one-line errors, ``--debug``, ``-h``."""
    settings = {"help_option_names": ["-h", "--help"], "max_content_width": 100, **kwargs.pop("context_settings", {})}
    return click.command(cls=OneLineCommand, context_settings=settings, **kwargs)  # type: ignore[return-value]


def bundle_option(func: F) -> F:
    return click.option("--bundle", type=click.Path(path_type=Path), default=default_bundle, help=BUNDLE_HELP)(func)


def method_bundle_option(func: F) -> F:
    """``--bundle SPEC`` of the tools that put methods side by side (bfm-eval, bfm-explain): a bundle and, after a
    colon, the route it is held to (``bfm_deploy.eval.methods``); the default bundle only without ``--compare``."""
    return click.option(
        "--bundle", "bundle", metavar="SPEC", default=None,
        help="The first method: a bundle folder, or FOLDER:full / FOLDER:partial for one extractor alone, reported as "
             "'bundle'; without --compare it defaults as everywhere: "
             + BUNDLE_HELP.split("(default: ")[1].rstrip(").") + ".")(func)


def backend_option(*, extra: tuple[str, ...] = (), help: str = "Inference backend; auto picks the fastest that works here.") -> Callable[[F], F]:
    return click.option("--backend", type=click.Choice(BACKEND_NAMES + extra), default="auto", show_default=True, help=help)


def _data_dir(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path:
    return value if value is not None else default_data_dir()


def data_dir_option(func: F) -> F:
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, callback=_data_dir,
                        help="Shared face data (default: $BFM_DATA, else ../shared/data beside the checkout).")(func)


def json_option(func: F) -> F:
    """``--json`` (a flag: the result on stdout) and ``--json-out PATH`` (written atomically), given to the
    command as one ``json_out`` value: None, ``"-"`` or the path. A flag cannot swallow the next argument, so
    ``bfm-verify --json a.jpg b.jpg`` means what it says."""

    @functools.wraps(func)
    def wrapper(*args: Any, json_stdout: bool, json_file: Path | None, **kwargs: Any) -> Any:
        if json_stdout and json_file is not None:
            raise click.UsageError("give --json (stdout) or --json-out PATH, not both")
        return func(*args, json_out=STDOUT if json_stdout else None if json_file is None else str(json_file), **kwargs)

    wrapper = click.option("--json-out", "json_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           callback=_json_file, help="Write the result as JSON to PATH (.json), atomically.")(wrapper)
    return click.option("--json", "json_stdout", is_flag=True, help="Print the result as JSON on stdout.")(wrapper)  # type: ignore[return-value]


def _json_file(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and value.suffix.lower() != ".json":
        raise click.BadParameter(f"must name a .json file, got {value}")
    return value


def _png_target(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and value.suffix.lower() != ".png":
        raise click.BadParameter(f"must name a .png file, got {value}")
    return value


def plot_option(help: str = "A PNG of the result.") -> Callable[[F], F]:
    return click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        callback=_png_target, help=help)


def _enable_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().meta[QUIET_KEY] = True  # read by progress() and note()


def quiet_option(func: F) -> F:
    return click.option("--quiet", is_flag=True, expose_value=False, is_eager=True, callback=_enable_quiet,
                        help="No progress bars and no 'wrote ...' notes.")(func)


def note(message: str) -> None:
    """An informational line on stderr (stdout stays the result), silenced by ``--quiet``."""
    if not quiet():
        click.echo(message, err=True)


def emit_json(target: str | None, document: Any) -> None:
    """``--json``'s one meaning: nothing (None), stdout ("-"), or an atomically written file."""
    if target is None:
        return
    text = json.dumps(document, indent=2) + "\n"
    if target == STDOUT:
        click.echo(text, nl=False)
        return
    path = Path(target)
    if path.is_dir():
        raise BfmError(f"--json {target} is a folder")
    atomic_write_text(path, text)
    note(f"wrote {path}")


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


def fpir_option(func: F) -> F:
    """``--fpir RATE``: the false positive identification rate an open-set threshold is set at (bfm-eval's
    identification protocol, ``bfm-gallery calibrate``)."""
    return click.option("--fpir", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
                        show_default=True, metavar="RATE",
                        help="Target false positive identification rate (non-enrolled probes called someone).")(func)


def open_set_report_option(func: F) -> F:
    """``--open-set REPORT.json``: per-route open-set thresholds from a ``bfm-eval --dataset lfw-identification``
    report of training folds (``bfm_deploy.eval.identification.open_set_thresholds``)."""
    return click.option("--open-set", "open_set_report", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                        default=None, metavar="REPORT.json",
                        help="Open-set thresholds from a bfm-eval --dataset lfw-identification --folds 1-5 --json-out "
                             "report (training identities; its target FPIR).")(func)
