"""Architectures, registry metadata, MAC counting and the BFMSystem container."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from bfm_deploy.errors import BfmError
from bfm_models import (
    count_macs,
    count_params,
    create_model,
    list_models,
    model_info,
)
from bfm_train.system import CHECKPOINT_FORMAT, BFMSystem


def meta_model(name: str) -> nn.Module:
    """Weightless instance: shapes, names and counts without allocating or computing anything."""
    with torch.device("meta"):
        return create_model(name)


def test_registry_lists_every_architecture():
    assert set(list_models()) == {"r18", "r34", "r50", "r100", "mbf", "classifier"}
    with pytest.raises(BfmError, match="unknown model 'r51'"):
        create_model("r51")
    with pytest.raises(BfmError, match="bad options"):
        create_model("classifier", dropout=0.1)


@pytest.mark.parametrize("name", ["r18", "mbf", "classifier"])
def test_forward_shapes(name):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 112, 112))
    assert out.shape == (1, 2 if name == "classifier" else 512)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["r34", "r50", "r100"])
def test_forward_shapes_deep_on_meta(name):
    out = meta_model(name).eval()(torch.empty(1, 3, 112, 112, device="meta"))
    assert tuple(out.shape) == (1, 512)


def test_classifier_is_table_one():
    model = create_model("classifier")
    layers = [type(m).__name__ for m in model.children()]
    assert layers == ["Conv2d", "BatchNorm2d", "ReLU", "Linear", "BatchNorm1d", "Linear"]
    assert model.conv.kernel_size == (4, 4) and model.conv.stride == (4, 4) and model.conv.out_channels == 16
    assert model.fc1.in_features == 12544 and model.fc1.out_features == 512 and model.fc2.out_features == 2
    # conv 3*16*4*4 + 16 = 784; BN2d 32; linear 12544*512 + 512 = 6,423,040; BN1d 1,024; linear 512*2 + 2 = 1,026
    assert count_params(model) == 784 + 32 + 6_423_040 + 1_024 + 1_026 == 6_425_906
    # MACs: conv 16*28*28 outputs * 48 = 602,112; linear 12,544*512 = 6,422,528; linear 512*2 = 1,024
    assert count_macs(model) == 602_112 + 6_422_528 + 1_024 == 7_025_664


def test_count_macs_hand_worked_and_leaves_model_alone():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 10 * 10, 5)).train()
    before = [p.clone() for p in model.parameters()]
    # conv: 8*10*10 outputs * 3*3*3 = 21,600; linear 800*5 = 4,000
    assert count_macs(model, (1, 3, 10, 10)) == 21_600 + 4_000
    assert count_macs(model, (4, 3, 10, 10)) == 4 * 25_600
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert next(model.parameters()).device.type == "cpu"


def test_model_info_counts():
    info = model_info("r50")
    assert info.params == 43_590_848
    assert info.macs == pytest.approx(6.309e9, rel=1e-3)
    assert (info.kind, info.output_name, info.output_size, info.input_size) == ("extractor", "embedding", 512, (3, 112, 112))
    cls = model_info("classifier")
    assert (cls.params, cls.macs, cls.output_name, cls.output_size) == (6_425_906, 7_025_664, "logits", 2)
    # the metadata is measured, not declared: a real instance counts the same
    assert count_params(create_model("mbf")) == model_info("mbf").params
    assert model_info("r18").macs < model_info("r34").macs < info.macs < model_info("r100").macs


# Known keys and shapes of insightface arcface_torch's iresnet50 state dict (written from its layout).
ARCFACE_TORCH_R50 = {
    "conv1.weight": (64, 3, 3, 3),
    "bn1.weight": (64,),
    "bn1.running_var": (64,),
    "prelu.weight": (64,),
    "layer1.0.bn1.weight": (64,),
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.0.bn2.weight": (64,),
    "layer1.0.prelu.weight": (64,),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.bn3.bias": (64,),
    "layer1.0.downsample.0.weight": (64, 64, 1, 1),
    "layer1.0.downsample.1.weight": (64,),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer2.3.conv2.weight": (128, 128, 3, 3),
    "layer3.13.bn3.running_mean": (256,),
    "layer4.0.downsample.0.weight": (512, 256, 1, 1),
    "layer4.2.conv2.weight": (512, 512, 3, 3),
    "bn2.weight": (512,),
    "fc.weight": (512, 25088),
    "fc.bias": (512,),
    "features.weight": (512,),
    "features.bias": (512,),
    "features.running_mean": (512,),
}


def test_iresnet50_state_dict_matches_arcface_torch():
    state = meta_model("r50").state_dict()
    for key, shape in ARCFACE_TORCH_R50.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    blocks = {int(m.group(1)): set() for m in (re.match(r"layer(\d)\.", k) for k in state) if m}
    for key in state:
        m = re.match(r"layer(\d)\.(\d+)\.", key)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    assert [len(blocks[i]) for i in (1, 2, 3, 4)] == [3, 4, 14, 3]
    # only the first block of each stage projects its shortcut
    assert not any(re.match(r"layer\d\.[1-9]\d*\.downsample", k) for k in state)
    # the embedding BN has a frozen unit scale, as in arcface_torch
    model = create_model("r18")
    assert not model.features.weight.requires_grad and torch.equal(model.features.weight, torch.ones(512))


@pytest.mark.parametrize("name,stages", [("r18", [2, 2, 2, 2]), ("r34", [3, 4, 6, 3]), ("r100", [3, 13, 30, 3])])
def test_iresnet_depths(name, stages):
    model = meta_model(name)
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3, 4)] == stages


def test_mbf_layout_matches_w600k():
    model = meta_model("mbf")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert (len(convs), len(prelus)) == (49, 34)
    assert tuple(model.fc.weight.shape) == (512, 64 * 7 * 7)
    assert convs[1].groups == 64 and tuple(convs[1].weight.shape) == (128, 2, 3, 3)


# ---- BFMSystem ----
def _write_checkpoint(path, system: BFMSystem, meta: dict[str, str], keep=("classifier.", "full.", "partial.")):
    tensors = {k: v.contiguous() for k, v in system.state_dict().items() if k.startswith(keep)}
    tensors["head.full.weight"] = torch.randn(3, 512)  # other contract keys are ignored by from_checkpoint
    save_file(tensors, str(path), metadata=meta)


def test_system_keys_and_checkpoint_round_trip(tmp_path):
    system = BFMSystem.build("mbf")
    keys = list(system.state_dict())
    assert {k.split(".")[0] for k in keys} == {"classifier", "full", "partial"}
    assert keys[0].startswith("classifier.") and keys[-1].startswith("partial.")
    with torch.no_grad():  # make the three parts distinguishable, and the BNs non-trivial
        for p in system.partial.parameters():
            p.add_(0.01)
        system.classifier.bn2.running_mean.add_(0.5)
    path = tmp_path / "ckpt.safetensors"
    _write_checkpoint(path, system, {"format": CHECKPOINT_FORMAT, "backbone": "mbf", "epoch": "1"})
    loaded = BFMSystem.from_checkpoint(path)
    assert loaded.backbone == "mbf" and not loaded.training
    got = loaded.state_dict()
    for key, value in system.state_dict().items():
        assert torch.equal(got[key], value), key


def test_system_baseline_checkpoint_has_only_full(tmp_path):
    system = BFMSystem.build("mbf").eval()
    path = tmp_path / "baseline.safetensors"
    _write_checkpoint(path, system, {"format": CHECKPOINT_FORMAT, "backbone": "mbf"}, keep=("full.",))
    loaded = BFMSystem.from_checkpoint(path)
    assert loaded.classifier is None and loaded.partial is None
    assert {k.split(".")[0] for k in loaded.state_dict()} == {"full"}
    got = loaded.full.state_dict()
    for key, value in system.full.state_dict().items():
        assert torch.equal(got[key], value), key


def test_system_no_longer_routes() -> None:
    # Routing is the runtime's (bfm_deploy.pipeline, at the bundle's calibrated mask threshold): BFMSystem only
    # holds the three networks for export, so an argmax copy of the rule cannot drift from it.
    assert not any(hasattr(BFMSystem, name) for name in ("is_masked", "embed", "pair_scores"))


def test_system_checkpoint_errors(tmp_path):
    system = BFMSystem.build("mbf")
    wrong_format = tmp_path / "a.safetensors"
    _write_checkpoint(wrong_format, system, {"format": "other", "backbone": "mbf"})
    with pytest.raises(BfmError, match="not a bfm-checkpoint/1"):
        BFMSystem.from_checkpoint(wrong_format)
    wrong_backbone = tmp_path / "b.safetensors"
    _write_checkpoint(wrong_backbone, system, {"format": CHECKPOINT_FORMAT, "backbone": "r18"})
    with pytest.raises(BfmError, match=r"does not fit IResNet: missing conv1.weight"):
        BFMSystem.from_checkpoint(wrong_backbone)
    garbage = tmp_path / "c.safetensors"
    garbage.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(BfmError, match="cannot read"):
        BFMSystem.from_checkpoint(garbage)
    with pytest.raises(BfmError, match="not found"):
        BFMSystem.from_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(BfmError, match="unknown backbone"):
        BFMSystem.build("classifier")
