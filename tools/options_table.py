"""The options table of ARCHITECTURE.md, made from the tools' click commands so that it cannot drift.

    python tools/options_table.py            # print the table
    python tools/options_table.py --write    # replace it in ARCHITECTURE.md (between the options markers)

``tests/runtime/test_cli_grammar.py`` fails when ARCHITECTURE.md holds another table than this one makes.
"""

from __future__ import annotations

import configparser
import importlib
from pathlib import Path

import click

from bfm_deploy.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- options:begin (tools/options_table.py --write) -->", "<!-- options:end -->"


def tools() -> dict[str, click.Command]:
    """Every console script of setup.cfg, by name, in the order listed there (a group's subcommands as
    ``tool sub``)."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    commands: dict[str, click.Command] = {}
    for line in parser["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = (part.strip() for part in line.split("="))
        module, attr = target.split(":")
        if module == "bfm_train.entry":  # a launcher that checks the training extras first
            module, attr = importlib.import_module(module).MODULES[name], "main"
        command = getattr(importlib.import_module(module), attr)
        if isinstance(command, click.Group):  # bfm-gallery: each subcommand is a tool of its own here
            commands.update({f"{name} {sub}": cmd for sub, cmd in command.commands.items()})
        else:
            commands[name] = command
    return commands


def _options(command: click.Command) -> dict[str, click.Option]:
    ctx = click.Context(command, **command.context_settings)
    # keyed by the long name (-h/--help: --help), whatever order click keeps the declarations in
    return {max(p.opts, key=len): p for p in command.get_params(ctx) if isinstance(p, click.Option)}


def _help(option: click.Option) -> str:
    return " ".join((option.help or "").split()).replace("|", "\\|")


def markdown() -> str:
    commands = tools()
    options = {name: _options(cmd) for name, cmd in commands.items()}
    shared = sorted({o for opts in options.values() for o in opts if sum(o in opts for opts in options.values()) > 1})
    head = "| option | " + " | ".join(f"`{name}`" for name in commands) + " |"
    rows = [head, "|---|" + "---|" * len(commands)]
    for opt in shared:
        rows.append(f"| `{opt}` | " + " | ".join("x" if opt in options[name] else "" for name in commands) + " |")
    lines = ["Options that several tools share (one definition each, in `bfm_deploy/cli_options.py`):", "", *rows, "",
             "What each option means, tool by tool (the `--help` text):", "",
             "| tool | option | meaning |", "|---|---|---|"]
    for name, opts in options.items():
        for param in opts.values():
            names = sorted(param.opts, key=len) + param.secondary_opts
            lines.append(f"| `{name}` | `{'/'.join(names)}` | {_help(param)} |")
    return "\n".join(lines) + "\n"


def current_table(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"ARCHITECTURE.md has no {BEGIN} ... {END} block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


@click.command()
@click.option("--write", is_flag=True, help="Replace the table in ARCHITECTURE.md.")
def main(write: bool) -> None:
    table = markdown()
    if not write:
        click.echo(table, nl=False)
        return
    path = REPO / "ARCHITECTURE.md"
    text = path.read_text()
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    atomic_write_text(path, f"{before}{BEGIN}\n{table}{END}{after}")
    click.echo(f"wrote {path}", err=True)


if __name__ == "__main__":
    main()
