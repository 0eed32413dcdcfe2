"""bfm-train: configs, checkpoints, recipes, determinism across resumes and kills, torchrun/gloo.

Networks are tiny stand-ins (``model.backbone: "module:callable"``) so that every run takes seconds on a CPU;
the faces are real LFW crops with a fake masked twin (lower half black).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from bfm_deploy.errors import BfmError
from bfm_train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from bfm_train.data import PairedFolderDataset
from bfm_train.train import config_from_dict, load_config, train
from bfm_train.train.cli import main as cli_main
from bfm_train.train.config import TrainConfig
from bfm_train.train.dataset import build_dataset
from bfm_train.train.distributed import DistEnv, tensors_digest
from bfm_train.train.nets import init_heads_from_class_means
from bfm_train.train.trainer import lr_at
from bfm_train.train.validation import best_threshold_accuracy

REPO = Path(__file__).resolve().parents[2]
NETS_MODULE = "bfm_test_tinynets"
TINY_NETS = '''
from torch import nn

def extractor():
    return nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(128, 32), nn.BatchNorm1d(32))

def classifier():
    return nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 2))
'''
NAMES = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon", "Hugo_Chavez"]


@pytest.fixture(scope="module")
def workspace(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """24 real faces of 6 identities, a masked twin, and an importable module of tiny networks."""
    root = tmp_path_factory.mktemp("bfm_train")
    for name in NAMES:
        (root / "faces" / name).mkdir(parents=True)
        (root / "masked" / name).mkdir(parents=True)
        for src in sorted((data_dir / "lfw" / "aligned112" / name).iterdir())[:4]:
            shutil.copy(src, root / "faces" / name / src.name)
            image = cv2.imread(str(src))
            assert image is not None
            image[56:] = 0
            cv2.imwrite(str(root / "masked" / name / src.name), image)
    (root / "py").mkdir()
    (root / "py" / f"{NETS_MODULE}.py").write_text(TINY_NETS)
    sys.path.insert(0, str(root / "py"))
    yield root
    sys.path.remove(str(root / "py"))


def tiny_config(ws: Path, run: str, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "recipe": "bfm",
        "run_dir": str(ws / run),
        "batch_size": 8,
        "epochs": 4,
        "log_every": 1,
        "checkpoint_every": 2,
        "data": {"root": str(ws / "faces"), "masked_root": str(ws / "masked"), "workers": 0},
        "model": {
            "backbone": f"{NETS_MODULE}:extractor",
            "classifier_arch": f"{NETS_MODULE}:classifier",
            "embedding_size": 32,
        },
        "optim": {"lr": 0.05},
        "loss": {"s": 16.0, "m": 0.2},
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


def run(ws: Path, run_name: str, **overrides: Any) -> dict[str, Any]:
    return train(config_from_dict(tiny_config(ws, run_name, **overrides)))


def metrics(ws: Path, run_name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ws / run_name / "metrics.jsonl").read_text().splitlines()]


def assert_same_checkpoint(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert (ca.step, ca.epoch) == (cb.step, cb.epoch)
    for group_a, group_b in ((ca.nets, cb.nets), (ca.heads, cb.heads)):
        assert group_a.keys() == group_b.keys()
        for part in group_a:
            for key, tensor in group_a[part].items():
                assert torch.equal(tensor, group_b[part][key]), f"{part}.{key} differs"
    assert ca.optimizer is not None and cb.optimizer is not None
    for index, state in ca.optimizer["state"].items():
        for name, value in state.items():
            assert torch.equal(value, cb.optimizer["state"][index][name]), f"optimizer.{index}.{name} differs"


def ckpt(ws: Path, run_name: str, step: int) -> Path:
    return ws / run_name / "checkpoints" / f"step-{step:08d}.safetensors"


# ---- configuration ---------------------------------------------------------------------------------------


def test_defaults_are_the_papers() -> None:
    cfg = TrainConfig()
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.1, 0.9, 5e-4)
    assert (cfg.batch_size, cfg.epochs, cfg.optim.milestones, cfg.optim.gamma) == (128, 100, [30, 60, 90], 0.1)
    assert (cfg.loss.s, cfg.loss.m) == (64.0, 0.5)


def test_yaml_overrides_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("recipe: baseline1\ndata: {root: faces}\noptim: {lr: 1}\n")
    cfg = load_config(path, ["optim.milestones=[2, 3]", "model.partial.freeze_prefixes=[layers.0.]"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.optim.milestones == [2, 3]
    assert cfg.model.partial.freeze_prefixes == ["layers.0."]
    for overrides, message in [
        (["optim.lrr=1"], "unknown config key optim.lrr"),
        (["optim.lr=fast"], "optim.lr: expected float"),
        (["epochs=1.5"], "epochs: expected int"),
        (["recipe=mine"], "recipe must be one of"),
        (["recipe=bfm"], "needs data.masked_root"),
        (["optim=3"], "optim: expected a mapping"),
        (["lr"], "key=value"),
    ]:
        with pytest.raises(BfmError, match=message):
            load_config(path, overrides)


def test_cli_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("recipe: bfm\ndata: {root: a, masked_root: b}\nmodel: {fulll: {frozen: true}}\n")
    result = CliRunner().invoke(cli_main, ["--config", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown config key model.fulll")
    result = CliRunner().invoke(cli_main, ["--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and result.output.startswith("error: ")


def test_shipped_configs_load() -> None:
    for name, recipe in [("demo_mbf", "bfm"), ("baseline2_mbf", "baseline2"), ("paper_r50_casia", "bfm")]:
        cfg = load_config(REPO / "configs" / f"{name}.yaml")
        assert cfg.recipe == recipe
    demo = load_config(REPO / "configs" / "demo_mbf.yaml")
    assert demo.model.full.init == "w600k_mbf" and demo.model.full.frozen and demo.data.exclude_lfw_folds == [6, 7, 8, 9, 10]


# ---- checkpoints -----------------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_contract(tmp_path: Path) -> None:
    from bfm_train.losses import ArcFaceHead
    from bfm_train.system import BFMSystem, create_model

    torch.manual_seed(0)
    nets = {"classifier": create_model("classifier"), "full": create_model("mbf"), "partial": create_model("mbf")}
    heads = {"full": ArcFaceHead(512, 5), "partial": ArcFaceHead(512, 5)}
    params = [p for m in [*nets.values(), *heads.values()] for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    emb = torch.randn(2, 512)  # a head-only step gives momentum buffers without a slow mbf backward pass
    heads["full"](emb, torch.tensor([0, 3])).backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "c.safetensors", nets=nets, heads=heads, optimizer=opt, backbone="mbf", recipe="bfm",
        config={"a": 1}, epoch=2, step=17, scheduler={"last_step": 17}, trainer={"steps_per_epoch": 8},
    )
    loaded = load_checkpoint(path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() would make it, not 0600
    assert (loaded.backbone, loaded.recipe, loaded.epoch, loaded.step) == ("mbf", "bfm", 2, 17)
    assert loaded.config == {"a": 1} and loaded.scheduler == {"last_step": 17} and loaded.trainer["steps_per_epoch"] == 8
    for part, net in nets.items():
        assert all(torch.equal(v, loaded.nets[part][k]) for k, v in net.state_dict().items())
    assert torch.equal(loaded.heads["partial"]["weight"], heads["partial"].weight)
    fresh = torch.optim.SGD(params, lr=1.0)
    assert loaded.optimizer is not None
    fresh.load_state_dict(loaded.optimizer)
    assert fresh.param_groups[0]["momentum"] == 0.9
    buffers = [p for p in params if "momentum_buffer" in opt.state[p]]
    assert buffers and all(torch.equal(fresh.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"]) for p in buffers)
    # the file follows ARCHITECTURE.md: the models engineer's loader rebuilds the three networks from it
    system = BFMSystem.from_checkpoint(path)
    assert system.partial is not None and torch.equal(system.partial.state_dict()["fc.weight"], nets["partial"].state_dict()["fc.weight"])
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        keys = set(fh.keys())
    assert meta["format"] == CHECKPOINT_FORMAT and isinstance(json.loads(meta["optimizer"]), list)
    assert {"head.full.weight", "head.partial.weight"} <= keys and any(k.startswith("optimizer.") for k in keys)
    assert all(k.split(".")[0] in ("classifier", "full", "partial", "head", "optimizer") for k in keys)
    with pytest.raises(BfmError, match="not a bfm-checkpoint/1"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        load_checkpoint(tmp_path / "other.safetensors")


def test_best_threshold_accuracy() -> None:
    acc, threshold = best_threshold_accuracy(np.array([0.9, 0.8, 0.3, 0.2, 0.7]), np.array([1, 1, 0, 0, 0]))
    assert acc == 1.0 and 0.7 < threshold <= 0.8  # anywhere in the gap between 0.8 and 0.7
    acc, threshold = best_threshold_accuracy(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), np.array([1, 0, 1, 0, 0]))
    assert acc == pytest.approx(0.8) and (0.8 < threshold <= 0.9 or 0.2 < threshold <= 0.7)
    acc, _ = best_threshold_accuracy(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 0]))
    assert acc == pytest.approx(2 / 3)  # tied scores cannot be split


def test_lr_schedule_milestones_and_warmup() -> None:
    cfg = config_from_dict({"recipe": "baseline1", "data": {"root": "x"}, "optim": {"milestones": [2, 3], "warmup_steps": 4}})
    lrs = [lr_at(cfg, step, steps_per_epoch=10) for step in (0, 1, 3, 19, 20, 29, 30, 99)]
    assert lrs == pytest.approx([0.025, 0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_heads_from_class_means(workspace: Path) -> None:
    from bfm_train.losses import ArcFaceHead

    cfg = config_from_dict(tiny_config(workspace, "unused"))
    dataset = build_dataset(cfg)
    assert isinstance(dataset, PairedFolderDataset)
    sys.modules.pop(NETS_MODULE, None)
    from bfm_test_tinynets import extractor  # type: ignore[import-not-found]

    torch.manual_seed(0)
    nets = {"full": extractor(), "partial": extractor()}
    heads: dict[str, torch.nn.Module] = {"full": ArcFaceHead(32, 6), "partial": ArcFaceHead(32, 6)}
    init_heads_from_class_means(heads, nets, dataset, 6, DistEnv(0, 1, 0, torch.device("cpu")), workers=0)
    assert nets["full"].training  # modes are restored
    nets["full"].eval()
    nets["partial"].eval()
    with torch.no_grad():
        items = [dataset[i] for i in range(len(dataset)) if dataset[i][2] == 2]
        x = torch.stack([it[0] for it in items])
        x_hat = torch.stack([it[1] for it in items])
        full_mean = torch.nn.functional.normalize(nets["full"](x), dim=1).sum(0)
        both = torch.nn.functional.normalize(nets["partial"](torch.cat([x, x_hat])), dim=1).sum(0)
    full_w, partial_w = heads["full"].weight, heads["partial"].weight
    assert isinstance(full_w, torch.Tensor) and isinstance(partial_w, torch.Tensor)
    torch.testing.assert_close(full_w[2], torch.nn.functional.normalize(full_mean, dim=0))
    torch.testing.assert_close(partial_w[2], torch.nn.functional.normalize(both, dim=0))


# ---- training --------------------------------------------------------------------------------------------


def test_training_reduces_the_loss(workspace: Path) -> None:
    run(workspace, "learn", epochs=8, data__flip=False)
    lines = [m for m in metrics(workspace, "learn") if "loss" in m]
    assert [m["step"] for m in lines] == list(range(1, 25))
    first, last = lines[:3], lines[-3:]
    for term in ("loss", "loss_mask", "loss_full", "loss_partial"):
        before = np.mean([m[term] for m in first])
        after = np.mean([m[term] for m in last])
        assert after < 0.8 * before, f"{term}: {before:.3f} -> {after:.3f}"
    assert all(m["images_per_s"] > 0 and m["lr"] == 0.05 for m in lines)


def test_resume_mid_epoch_is_bit_identical(workspace: Path) -> None:
    run(workspace, "straight", max_steps=7)
    run(workspace, "broken", max_steps=4)  # 3 steps per epoch: stops inside epoch 2
    assert ckpt(workspace, "broken", 4).is_file()
    run(workspace, "broken", max_steps=7, resume="auto")
    assert_same_checkpoint(ckpt(workspace, "straight", 7), ckpt(workspace, "broken", 7))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    assert strip(metrics(workspace, "straight")) == strip(metrics(workspace, "broken"))


def test_kill_9_then_resume_matches_uninterrupted(workspace: Path, tmp_path: Path) -> None:
    config = tmp_path / "kill.yaml"
    config.write_text(json.dumps(tiny_config(workspace, "killed", epochs=100, checkpoint_every=1)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(workspace / "py"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bfm_train.train.cli", "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120  # generous: the subprocess imports torch on a busy machine
    while not ckpt(workspace, "killed", 3).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training subprocess ended early"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # whatever the kill interrupted, only whole checkpoint files exist
    saved = sorted((workspace / "killed" / "checkpoints").glob("step-*.safetensors"))
    last = int(saved[-1].stem.split("-")[1])
    assert last >= 3  # a checkpoint being written when the kill came stays a hidden .tmp, never a step-* file
    target = last + 2
    (workspace / "killed" / "checkpoints" / ".step-00000099.safetensors.999999999.abc123.tmp").write_bytes(b"half a file")
    run(workspace, "killed", epochs=100, checkpoint_every=1, resume="auto", max_steps=target)
    assert not list((workspace / "killed" / "checkpoints").glob(".*.tmp"))  # the resume removed the leftovers
    run(workspace, "unkilled", epochs=100, checkpoint_every=1, max_steps=target)
    assert_same_checkpoint(ckpt(workspace, "unkilled", target), ckpt(workspace, "killed", target))


def test_freezing_init_and_baselines(workspace: Path, tmp_path: Path) -> None:
    sys.modules.pop(NETS_MODULE, None)
    from bfm_test_tinynets import extractor  # type: ignore[import-not-found]
    from safetensors.torch import save_file

    torch.manual_seed(5)
    init = {k: v.contiguous() for k, v in extractor().state_dict().items()}
    save_file(init, str(tmp_path / "init.safetensors"))
    run(
        workspace, "frozen", max_steps=3, optim__warmup_steps=2, optim__clip_grad_norm=1.0,
        model__full={"init": str(tmp_path / "init.safetensors"), "frozen": True},
        model__partial={"init": "full", "freeze_prefixes": ["0."]},
    )
    out = load_checkpoint(ckpt(workspace, "frozen", 3))
    assert set(out.heads) == {"partial"}  # no ArcFace layer for a frozen E_F
    assert all(torch.equal(out.nets["full"][k], v) for k, v in init.items())  # frozen, BN statistics included
    for key in ("0.weight", "0.bias"):
        assert torch.equal(out.nets["partial"][key], init[key])  # frozen by prefix
    assert not torch.equal(out.nets["partial"]["5.weight"], init["5.weight"])  # trained
    assert [m["lr"] for m in metrics(workspace, "frozen")] == [0.025, 0.05, 0.05]  # warm-up, then lr
    assert "loss_full" not in metrics(workspace, "frozen")[0]
    # baselines store full.* and head.full.* only
    for recipe in ("baseline1", "baseline2"):
        run(workspace, recipe, recipe=recipe, max_steps=2)
        out = load_checkpoint(ckpt(workspace, recipe, 2))
        assert set(out.nets) == {"full"} and set(out.heads) == {"full"} and out.recipe == recipe


def test_trains_from_record_files(workspace: Path, tmp_path: Path) -> None:
    """data.format: rec with a masked twin .rec (plain layout: every record an image, label in its header)."""
    from bfm_train.data import IRHeader, RecordWriter, pack_record

    for kind in ("faces", "masked"):
        with RecordWriter(tmp_path / f"{kind}.rec", tmp_path / f"{kind}.idx") as writer:
            key = 0
            for label, name in enumerate(NAMES):
                for image in sorted((workspace / kind / name).iterdir()):
                    writer.write(key, pack_record(IRHeader(0, float(label), key, 0), image.read_bytes()))
                    key += 1
    cfg = tiny_config(workspace, "rec", recipe="baseline2", max_steps=2)
    cfg["data"].update(format="rec", root=str(tmp_path / "faces.rec"), masked_root=str(tmp_path / "masked.rec"))
    train(config_from_dict(cfg))
    out = load_checkpoint(ckpt(workspace, "rec", 2))
    assert out.trainer["num_classes"] == len(NAMES) and out.trainer["steps_per_epoch"] == 3


def test_validation_and_lfw_fold_exclusion(workspace: Path, tmp_path: Path) -> None:
    faces = workspace / "faces"
    idx = lambda name, k: int(sorted((faces / name).iterdir())[k].stem.rsplit("_", 1)[1])  # noqa: E731
    pairs = ["2 2"]
    for same, diff in [(NAMES[:2], NAMES[2:4]), (NAMES[4:], NAMES[4:])]:  # fold 1, fold 2
        pairs += [f"{n}\t{idx(n, 0)}\t{idx(n, 1)}" for n in same]
        pairs += [f"{diff[0]}\t{idx(diff[0], 0)}\t{diff[1]}\t{idx(diff[1], 1)}", f"{diff[1]}\t{idx(diff[1], 2)}\t{diff[0]}\t{idx(diff[0], 3)}"]
    (tmp_path / "pairs.txt").write_text("\n".join(pairs) + "\n")
    cfg = tiny_config(
        workspace, "val", epochs=1,
        data__exclude_lfw_pairs=str(tmp_path / "pairs.txt"), data__exclude_lfw_folds=[2],
        val={"pairs": str(tmp_path / "pairs.txt"), "root": str(faces), "masked_root": str(workspace / "masked"), "folds": [1]},
    )
    dataset = build_dataset(config_from_dict(cfg))
    assert dataset.identities == sorted(set(NAMES) - set(NAMES[4:]))  # type: ignore[attr-defined]
    train(config_from_dict(cfg))
    val = [m for m in metrics(workspace, "val") if "val_unmasked_acc" in m]
    assert len(val) == 1 and val[0]["val_pairs"] == 4 and val[0]["val_masked_pairs"] == 4
    assert 0.5 <= val[0]["val_unmasked_acc"] <= 1.0 and 0.5 <= val[0]["val_masked_acc"] <= 1.0
    # the run's report: its validation curve and losses, and a PNG of both; made again from metrics.jsonl alone
    report = json.loads((workspace / "val" / "report.json").read_text())
    assert report["format"] == "bfm-train-report/1" and report["recipe"] == "bfm" and report["steps"] == val[0]["step"]
    assert report["validation"] == [{k: val[0][k] for k in ("step", "epoch", "val_masked_acc", "val_unmasked_acc")}]
    assert report["last_losses"]["loss"] == [m for m in metrics(workspace, "val") if "loss" in m][-1]["loss"]
    assert (workspace / "val" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (workspace / "val" / "report.json").unlink()
    result = CliRunner().invoke(cli_main, ["--report", str(workspace / "val")])
    assert result.exit_code == 0 and json.loads((workspace / "val" / "report.json").read_text()) == report
    result = CliRunner().invoke(cli_main, ["--report", str(tmp_path)])
    assert result.exit_code == 2 and result.output.strip().endswith("no metrics.jsonl (not a bfm-train run directory)")
    bad = tiny_config(workspace, "val2", val={"pairs": str(tmp_path / "pairs.txt"), "root": str(faces), "folds": [3]})
    with pytest.raises(BfmError, match="val.folds: fold 3"):
        train(config_from_dict(bad))


def test_torchrun_gloo_two_ranks_end_identical(workspace: Path, tmp_path: Path) -> None:
    config = tmp_path / "ddp.yaml"
    config.write_text(json.dumps(tiny_config(workspace, "ddp", max_steps=3)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(workspace / "py"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "bfm_train.train.cli", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    # the ranks' own first words (the root cause) and torchrun's summary (which rank, which signal)
    assert result.returncode == 0, result.stderr[:1500] + "\n[...]\n" + result.stderr[-1500:]
    assert "2 process(es) on cpu" in result.stderr + result.stdout
    rows = metrics(workspace, "ddp")
    digests = next(r["rank_weight_digests"] for r in rows if "rank_weight_digests" in r)
    assert len(digests) == 2 and digests[0] == digests[1]
    # ... and the digest is that of the weights rank 0 saved
    out = load_checkpoint(ckpt(workspace, "ddp", 3))
    tensors = {f"{p}.{k}": v for p, s in out.nets.items() for k, v in s.items()}
    tensors.update({f"head.{p}.{k}": v for p, s in out.heads.items() for k, v in s.items()})
    assert tensors_digest(tensors) == digests[0]
    # per-rank batch of 4: 24 images / 2 ranks / 4 = 3 steps per epoch, as with one process of batch 8
    assert out.trainer["steps_per_epoch"] == 3 and out.trainer["world_size"] == 2


@pytest.mark.parametrize("target", ["partial", "full"])
def test_guided_target(target: str) -> None:
    """loss.guided_target: partial is Eq. 4 as printed; full pulls E_P(x̂) to the fixed E_F(x), which it never trains."""
    from bfm_train import losses
    from bfm_train.train.config import LossConfig
    from bfm_train.train.recipes import RecipeLoss

    torch.manual_seed(0)
    full, partial = nn.Sequential(nn.Flatten(), nn.Linear(12, 8)), nn.Sequential(nn.Flatten(), nn.Linear(12, 8))
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    full.requires_grad_(False)
    nets: dict[str, nn.Module] = {"classifier": classifier, "full": full, "partial": partial}
    heads: dict[str, nn.Module] = {"partial": losses.ArcFaceHead(8, 3)}
    recipe = RecipeLoss("bfm", nets, heads, LossConfig(guided_target=target))
    x, x_hat, y = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    terms = recipe(x, x_hat, y)
    expected = losses.guided_loss((full if target == "full" else partial)(x), partial(x_hat))
    assert torch.allclose(terms["guided"], expected)
    assert "full" not in terms  # a frozen E_F has no ArcFace term, whatever the guided target
    terms["guided"].backward()
    assert all(p.grad is None for p in full.parameters())
    assert partial[1].weight.grad is not None and partial[1].weight.grad.abs().sum() > 0
    with pytest.raises(BfmError, match="guided_target"):
        config_from_dict({"data": {"root": "x", "masked_root": "y"}, "loss": {"guided_target": "teacher"}})
