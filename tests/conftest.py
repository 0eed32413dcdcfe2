from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bfm_deploy.datasets import default_data_dir
from tests.fixtures.bundles import BUNDLE_THRESHOLDS as BUNDLE_THRESHOLDS
from tests.fixtures.bundles import DEMO_BUNDLE
from tests.fixtures.bundles import DARK_PIXEL_MEAN, FC1_WEIGHT, STEEP, add_classifier_weights, build_runtime_bundle
from tests.fixtures.bundles import DARKEN as DARKEN


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-face data (``$BFM_DATA`` or ../shared/data); tests that need it skip without it."""
    root = default_data_dir()
    if not (root / "lfw" / "aligned112").is_dir():
        pytest.skip(f"shared face data not found at {root} (set BFM_DATA)")
    return root


# --- the runtime tests' bundle, built without torch (tests/fixtures/bundles.py) ---------------------------------


@pytest.fixture(scope="session")
def demo():  # -> bfm_deploy.bundle.Bundle
    """The committed demo bundle, loaded once (the gallery tests match against its thresholds)."""
    from bfm_deploy.bundle import Bundle

    return Bundle.load(DEMO_BUNDLE)


@pytest.fixture(scope="session")
def runtime_bundle(tmp_path_factory) -> Path:
    """The demo bundle's E_F, E_P and detector with the brightness classifier (masked iff the crop's mean pixel
    < DARK_PIXEL_MEAN) and BUNDLE_THRESHOLDS: what the runtime tests run on, with or without torch."""
    return build_runtime_bundle(tmp_path_factory.mktemp("bundles") / "mbf")


@pytest.fixture(scope="session")
def weights_bundle(runtime_bundle: Path, tmp_path_factory) -> Path:
    """``runtime_bundle`` with a weights.safetensors entry (the classifier's tensors only: for the manifest's
    weights checks, not for the torch backend)."""
    out = tmp_path_factory.mktemp("bundles") / "mbf"
    shutil.copytree(runtime_bundle, out)
    return add_classifier_weights(out)


# --- bundles built by bfm-export (train side: tests/train/test_export.py, test_data.py, and torch-only tests) ---------


def brightness_classifier():  # -> bfm_models.MaskClassifier
    """A mask classifier whose output we control: masked iff the image's mean pixel value < DARK_PIXEL_MEAN
    (the torch twin of tests/fixtures/bundles.py's classifier graph, for the train-side tests).

    conv channel 0 averages each 4x4 patch (+1, so it stays positive through the ReLU: (pixel / 127.5)),
    fc1 unit 0 sums channel 0 over the image (``FC1_WEIGHT`` each), fc2 turns its mean "below the cut" into a large masked logit.
    BatchNorm layers keep their identity statistics.
    """
    import torch

    from bfm_models import create_model

    model = create_model("classifier").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.bn1.weight.fill_(1.0)
        model.bn2.weight.fill_(1.0)
        model.conv.weight[0] = 1.0 / model.conv.weight[0].numel()
        model.conv.bias[0] = 1.0
        cells = model.fc1.in_features // model.conv.out_channels
        model.fc1.weight[0, :cells] = FC1_WEIGHT  # a sum, scaled to the mean by fc2
        model.fc2.weight[1, 0] = -STEEP / (FC1_WEIGHT * cells)
        model.fc2.bias[1] = STEEP * DARK_PIXEL_MEAN / 127.5
    return model


@pytest.fixture(scope="session")
def mbf_source():  # -> bfm_train.export.ExportSource
    """w600k_mbf as E_F (via ``--from-pretrained``), E_P = the same weights with 2% seeded noise (so that the
    routes are distinguishable), and the brightness classifier."""
    torch = pytest.importorskip("torch")
    from bfm_train.export import ExportOptions, load_source

    source = load_source(None, ExportOptions(from_pretrained="w600k_mbf", classifier="random"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in source.networks["partial"].parameters():
            p.mul_(1.0 + 0.02 * torch.randn(p.shape, generator=generator))
    source.networks["classifier"] = brightness_classifier()
    source.source["classifier"] = "test: mean-brightness classifier"
    source.source["extractors"] = "full = w600k_mbf, partial = w600k_mbf with 2% noise"
    return source


@pytest.fixture(scope="session")
def mbf_bundle(tmp_path_factory, mbf_source) -> Path:
    """The session's bundle exported by bfm_train (ONNX graphs, manifest, torch weights) of ``mbf_source``."""
    from bfm_train.export import ExportOptions, export_source

    out = tmp_path_factory.mktemp("bundles") / "mbf"
    return export_source(mbf_source, ExportOptions(out=out, thresholds=dict(BUNDLE_THRESHOLDS), parity_images=8), log=lambda _m: None)
