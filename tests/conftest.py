from __future__ import annotations

from pathlib import Path

import pytest

from bfm_deploy.datasets import default_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real-face data (``$BFM_DATA`` or ../shared/data); tests that need it skip without it."""
    root = default_data_dir()
    if not (root / "lfw" / "aligned112").is_dir():
        pytest.skip(f"shared face data not found at {root} (set BFM_DATA)")
    return root


# --- bundles built by bfm-export (tests/test_export.py, test_bundle.py, test_verifier.py, test_verify_cli.py) ---

# The controlled classifier of ``mbf_bundle`` calls a face "masked" when its mean pixel value is below this:
# real LFW crops have means of about 65-140, the same crops scaled by DARKEN have means below 30.
DARK_PIXEL_MEAN = 40.0
DARKEN = 0.2
BUNDLE_THRESHOLDS = {"full": 0.30, "partial": 0.25}


def brightness_classifier():  # -> bfm_deploy.models.MaskClassifier
    """A mask classifier whose output we control: masked iff the image's mean pixel value < DARK_PIXEL_MEAN.

    conv channel 0 averages each 4x4 patch (+1, so it stays positive through the ReLU: (pixel / 127.5)),
    fc1 unit 0 averages channel 0 over the image, fc2 turns "below the cut" into a large masked logit.
    BatchNorm layers keep their identity statistics.
    """
    import torch

    from bfm_deploy.models import get_model

    model = get_model("classifier").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.bn1.weight.fill_(1.0)
        model.bn2.weight.fill_(1.0)
        model.conv.weight[0] = 1.0 / model.conv.weight[0].numel()
        model.conv.bias[0] = 1.0
        cells = model.fc1.in_features // model.conv.out_channels
        model.fc1.weight[0, :cells] = 1.0 / cells
        steep = 100.0
        model.fc2.weight[1, 0] = -steep
        model.fc2.bias[1] = steep * DARK_PIXEL_MEAN / 127.5
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
    """The session's one exported bundle (ONNX graphs, manifest, torch weights) of ``mbf_source``."""
    from bfm_train.export import ExportOptions, export_source

    out = tmp_path_factory.mktemp("bundles") / "mbf"
    return export_source(mbf_source, ExportOptions(out=out, thresholds=dict(BUNDLE_THRESHOLDS), parity_images=8), log=lambda _m: None)
