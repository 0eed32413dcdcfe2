"""One option grammar across the tools: the shared options are one definition each, and ARCHITECTURE.md's
table of every tool's options is the one the commands make."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]


def _options_table_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("options_table", REPO / "tools" / "options_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TABLE = _options_table_module()


def _every_tool() -> tuple[dict[str, click.Command], str]:
    """The table's commands, or none and why: it covers bfm-train and bfm-export too, whose modules need the
    training extras, so on a base install (no torch) the tests over the whole table skip and the rest runs. A
    runtime module that fails to import is not a missing extra and still fails the collection."""
    try:
        return TABLE.tools(), ""
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("bfm_deploy"):
            raise
        return {}, f"the options table imports the training tools: {exc}"


TOOLS, NO_TOOLS = _every_tool()
needs_every_tool = pytest.mark.skipif(not TOOLS, reason=NO_TOOLS)


def _option(command: click.Command, name: str) -> click.Option | None:
    return next((p for p in command.get_params(click.Context(command, **command.context_settings)) if isinstance(p, click.Option) and name in p.opts), None)


@needs_every_tool
def test_architecture_table_is_current() -> None:
    assert TABLE.current_table((REPO / "ARCHITECTURE.md").read_text()) == TABLE.markdown(), (
        "ARCHITECTURE.md's options table is stale: run python tools/options_table.py --write")


@needs_every_tool
@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_tool_has_help_debug_and_quiet(name: str) -> None:
    command = TOOLS[name]
    for option in ("-h", "--help", "--debug", "--quiet"):
        assert _option(command, option) is not None, f"{name} has no {option}"
    result = CliRunner().invoke(command, ["-h"])
    assert result.exit_code == 0 and "--quiet" in result.output


@needs_every_tool
@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_tool_answers_version_before_its_arguments(name: str) -> None:
    from bfm_deploy import __version__
    from bfm_deploy.bundle import Bundle

    command = TOOLS[name]
    # no arguments at all, and --version wherever it stands: it is answered before anything is checked
    for args in (["--version"], ["missing.jpg", "--version"]):
        result = CliRunner().invoke(command, args, prog_name=name)
        assert result.exit_code == 0, (args, result.output)
        lines = result.output.splitlines()
        assert lines[0] == f"{name} (bfm) {__version__}"
        if _option(command, "--bundle") is not None:
            demo = Bundle.load(REPO / "engines" / "demo")
            assert lines[1] == f"bundle demo at {demo.root} (manifest sha256 {demo.digest[:12]})"
        else:
            assert len(lines) == 1
    bad = CliRunner().invoke(command, ["--version", "--bundle", str(REPO)], prog_name=name)
    if _option(command, "--bundle") is not None:
        assert bad.exit_code == 2 and "is not a bundle" in bad.output


@needs_every_tool
@pytest.mark.parametrize("option", ["--json", "--json-out", "--version", "--quiet", "--debug", "--data-dir", "--bundle", "--backend", "--plot"])
def test_a_shared_option_is_the_same_everywhere(option: str) -> None:
    """Same type, default and value handling wherever the option exists (bfm-eval's and bfm-explain's --bundle also take a route,
    bfm-bench's --backend also 'all': their help says so, the rest is the shared definition)."""
    found = {name: opt for name, cmd in TOOLS.items() if (opt := _option(cmd, option)) is not None}
    assert len(found) >= 2, option
    special = {("--bundle", "bfm-eval"), ("--bundle", "bfm-explain"), ("--backend", "bfm-bench")}
    plain = {name: opt for name, opt in found.items() if (option, name) not in special}
    shapes = {(type(o.type).__name__, o.is_flag, str(o.default), o.callback.__qualname__ if o.callback else None)
              for o in plain.values()}
    assert len(shapes) == 1, f"{option} differs between {sorted(plain)}: {shapes}"
    routed = [found[name] for kind, name in special if kind == option and name in found]
    assert len({(o.metavar, o.help) for o in routed}) <= 1, f"{option}: the route-taking forms differ"
    if option == "--backend":
        for name, opt in found.items():
            assert opt.default == "auto" and {"auto", "trt", "ort", "torch"} <= set(opt.type.choices), name  # type: ignore[attr-defined]
    if option not in ("--backend", "--plot"):
        assert len({o.help for o in plain.values()}) == 1, f"{option}: help texts differ"


def test_json_alone_on_stdout_with_a_path_to_the_file(runtime_bundle: Path, data_dir: Path, tmp_path: Path) -> None:
    from bfm_deploy.verify_cli import main

    faces = sorted((data_dir / "lfw" / "aligned112" / "Aaron_Peirsol").iterdir())[:2]
    args = [str(faces[0]), str(faces[1]), "--bundle", str(runtime_bundle), "--aligned"]
    alone = CliRunner().invoke(main, [*args, "--json"])
    record = json.loads(alone.stdout)
    assert alone.exit_code == 0 and record["same"] is True and record["route"] == "full"
    out = tmp_path / "r.json"
    to_file = CliRunner().invoke(main, [*args, "--json-out", str(out), "--quiet"])
    assert to_file.exit_code == 0 and json.loads(out.read_text()) == record
    assert "same person" in to_file.stdout and "wrote" not in to_file.stderr  # the usual line; --quiet drops the note
    noted = CliRunner().invoke(main, [*args, "--json-out", str(tmp_path / "s.json")])
    assert noted.stderr.strip() == f"wrote {tmp_path / 's.json'}"
    # --json is a flag: before the images it is the natural spelling and takes nothing from them.
    before = faces[0].read_bytes()
    first = CliRunner().invoke(main, ["--json", str(faces[0]), str(faces[1]), "--bundle", str(runtime_bundle), "--aligned"])
    assert first.exit_code == 0 and json.loads(first.stdout) == record and faces[0].read_bytes() == before
    # --json-out names a .json file and nothing else; with --json as well it is a usage error.
    swallowed = CliRunner().invoke(main, ["--json-out", str(faces[0]), str(faces[1]), "--bundle", str(runtime_bundle)])
    assert swallowed.exit_code == 2 and "must name a .json file" in swallowed.stderr and faces[0].read_bytes() == before
    both = CliRunner().invoke(main, [*args, "--json", "--json-out", str(out)])
    assert both.exit_code == 2 and "not both" in both.stderr


BLOCK_TRAINING_EXTRAS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "safetensors"):
            raise ImportError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
sys.argv = [sys.argv[1], "--help"]
from bfm_train import entry
getattr(entry, sys.argv[0].split("-")[1])()
"""


@pytest.mark.parametrize("tool", ["bfm-train", "bfm-export"])
def test_training_tools_without_their_extras_say_so_in_one_line(tool: str) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", BLOCK_TRAINING_EXTRAS, tool], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and "pip install 'bfm[train]'" in result.stderr and "Traceback" not in result.stderr
