"""Config inheritance (``base: other.yaml``): merge rules, chains, bad bases, and every shipped config resolving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bfm_deploy.errors import BfmError
from bfm_train.train.cli import main as cli_main
from bfm_train.train.config import load_config
from bfm_train.train.config_files import merge_config, read_config_file

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
# a complete config for the chain tests: recipe bfm needs a root and a masked twin
VALID = "recipe: bfm\ndata: {root: faces, masked_root: masked}\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_merge_recurses_into_mappings_and_replaces_everything_else() -> None:
    base = {"epochs": 3, "data": {"root": "a", "exclude_lfw_folds": [6, 7], "augment": {"blur": 0.3, "jpeg": 0.3}},
            "val": {"pairs": "p.txt"}, "model": {"full": {"init": "w600k_mbf"}}}
    child = {"epochs": 12, "data": {"exclude_lfw_folds": [5], "augment": {"jpeg": 0.5}}, "val": None,
             "model": {"full": "not a mapping"}, "seed": 1}
    merged = merge_config(base, child)
    assert merged == {
        "epochs": 12,
        "data": {"root": "a", "exclude_lfw_folds": [5], "augment": {"blur": 0.3, "jpeg": 0.5}},  # a list is replaced
        "val": None,
        "model": {"full": "not a mapping"},
        "seed": 1,
    }
    # neither input is changed (a base is shared by several children)
    assert base["data"] == {"root": "a", "exclude_lfw_folds": [6, 7], "augment": {"blur": 0.3, "jpeg": 0.3}}
    assert child["data"] == {"exclude_lfw_folds": [5], "augment": {"jpeg": 0.5}}


def test_base_path_is_relative_to_the_configs_folder_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "configs" / "common" / "data.yaml", VALID + "epochs: 7\n")
    child = write(tmp_path / "configs" / "runs" / "child.yaml", "base: ../common/data.yaml\nseed: 3\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(elsewhere / "common" / "data.yaml", "epochs: 99\n")  # a decoy where a cwd-relative lookup would land
    monkeypatch.chdir(elsewhere)
    cfg = load_config(child)
    assert (cfg.epochs, cfg.seed, cfg.data.root) == (7, 3, "faces")


def test_chain_of_three_and_overrides_on_top(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "recipe: bfm\nepochs: 12\noptim: {lr: 0.1, milestones: [8, 11]}\n"
          "data: {root: faces, masked_root: masked, augment: {blur: 0.3, jpeg: 0.3}}\n")
    write(tmp_path / "b.yaml", "base: a.yaml\ndata: {augment: {colour: 0.5}}\n")
    c = write(tmp_path / "c.yaml", "base: b.yaml\nepochs: 48\noptim: {milestones: [32, 44]}\n")
    tree = read_config_file(c)
    assert "base" not in tree
    cfg = load_config(c, ["optim.lr=0.01", "data.augment.jpeg=0.1"])
    assert (cfg.epochs, cfg.optim.milestones, cfg.optim.lr) == (48, [32, 44], 0.01)
    assert (cfg.data.augment.blur, cfg.data.augment.jpeg, cfg.data.augment.colour) == (0.3, 0.1, 0.5)
    assert (cfg.data.root, cfg.data.masked_root) == ("faces", "masked")
    # a child is read as it is now: the base's edit shows in every descendant
    write(tmp_path / "a.yaml", VALID + "epochs: 12\noptim: {lr: 0.2}\n")
    assert load_config(c).optim.lr == 0.2


@pytest.mark.parametrize("files, start, message", [
    ({"a.yaml": "base: a.yaml\n"}, "a.yaml", r"a\.yaml: base cycle .*a\.yaml -> .*a\.yaml$"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: ./c.yaml\n", "c.yaml": "base: a.yaml\n"}, "a.yaml",
     r"base cycle .*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml$"),
    ({"a.yaml": "base: gone.yaml\n"}, "a.yaml", r"gone\.yaml: cannot read config .*\(the base of .*a\.yaml\)$"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "- 1\n- 2\n"}, "a.yaml",
     r"b\.yaml: a config must be a mapping .*\(the base of .*a\.yaml\)$"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "data: [\n"}, "a.yaml", r"b\.yaml: line \d+ invalid YAML \(the base of"),
    ({"a.yaml": "base: [b.yaml]\n"}, "a.yaml", r"a\.yaml: base must be a config file name"),
    ({"a.yaml": "base:\nepochs: 3\n"}, "a.yaml", r"a\.yaml: base must be a config file name"),
])
def test_bad_bases_are_one_line_errors_naming_the_files(
    tmp_path: Path, files: dict[str, str], start: str, message: str
) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(BfmError, match=message) as info:
        load_config(tmp_path / start)
    assert "\n" not in str(info.value)


def test_cli_prints_the_resolved_config_and_fails_in_one_line(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", VALID + "epochs: 12\n")
    child = write(tmp_path / "b.yaml", "base: a.yaml\nseed: 5\n")
    result = CliRunner().invoke(cli_main, ["--config", str(child), "--print-config"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert "base" not in printed and (printed["epochs"], printed["seed"], printed["data"]["root"]) == (12, 5, "faces")
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    result = CliRunner().invoke(cli_main, ["--config", str(child), "--print-config"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "base cycle" in lines[0]
    # base is a file-level key, not a config key: --set cannot name it
    plain = write(tmp_path / "plain.yaml", VALID)
    result = CliRunner().invoke(cli_main, ["--config", str(plain), "--set", "base=a.yaml"])
    assert result.exit_code == 2 and result.output.startswith("error: unknown config key base")


def test_every_shipped_config_builds_and_runs_somewhere_of_its_own() -> None:
    assert len(CONFIGS) >= 20
    run_dirs: dict[str, str] = {}
    for path in CONFIGS:
        cfg = load_config(path)  # builds the typed config and validates it
        # a child that forgot its run_dir would train into (and resume from) its base's run directory
        assert cfg.run_dir not in run_dirs, f"{path.name} and {run_dirs.get(cfg.run_dir)} share run_dir {cfg.run_dir}"
        run_dirs[cfg.run_dir] = path.name


def _agrees(recorded: Any, resolved: Any, key: str) -> list[str]:
    if isinstance(recorded, dict) and isinstance(resolved, dict):
        return [d for k, v in recorded.items() for d in _agrees(v, resolved.get(k), f"{key}.{k}".lstrip("."))]
    return [] if recorded == resolved else [f"{key}: recorded {recorded!r}, resolved {resolved!r}"]


def test_recorded_training_runs_match_their_configs() -> None:
    """benchmarks/results/training/<name>/config.yaml is the resolved config bfm-train wrote for configs/<name>.yaml:
    every key it has must still resolve to the same value (resume was --resume auto on the command line; keys
    added to the config since are absent from the older records)."""
    records = sorted((REPO / "benchmarks" / "results" / "training").glob("*/config.yaml"))
    assert len(records) >= 10
    for record in records:
        recorded = yaml.safe_load(record.read_text())
        recorded.pop("resume")
        resolved = load_config(REPO / "configs" / f"{record.parent.name}.yaml").to_dict()
        assert not _agrees(recorded, resolved, ""), (record.parent.name, _agrees(recorded, resolved, ""))
