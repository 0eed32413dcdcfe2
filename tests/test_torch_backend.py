"""The torch backend runs the shipped bundle, which carries no weights.safetensors: rebuilt from its ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bfm_deploy.backends import create_backend
from bfm_deploy.bundle import Bundle
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
from bfm_deploy.tensor import preprocess
from bfm_deploy.verifier import Verifier

DEMO = Path(__file__).resolve().parents[1] / "engines" / "demo"


def test_the_demo_bundle_runs_on_torch_and_matches_onnx_runtime(data_dir: Path) -> None:
    bundle = Bundle.load(DEMO)
    assert bundle.weights is None  # as it ships
    crops = [load_image(p) for p in sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[:: 400][:32]]
    batch = preprocess(crops)
    with create_backend("torch", bundle, device="cpu") as torch_backend, create_backend("ort", bundle, device="cpu") as ort_backend:
        assert torch_backend.weights_from == "onnx"  # type: ignore[attr-defined]
        for network in ("classifier", "full", "partial"):
            a, b = torch_backend.infer(network, batch), ort_backend.infer(network, batch)
            cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            assert cosine.min() >= 0.9999, (network, cosine.min())
        pairs = [(crops[i], crops[i + 1]) for i in range(0, len(crops) - 1, 2)]
        with Verifier(bundle, backend=torch_backend) as on_torch, Verifier(bundle, backend=ort_backend) as on_ort:
            got = list(on_torch.verify_many(pairs, aligned=True))
            want = list(on_ort.verify_many(pairs, aligned=True))
    assert [(r.same, r.route) for r in got] == [(r.same, r.route) for r in want]  # type: ignore[union-attr]
    assert max(abs(r.score - w.score) for r, w in zip(got, want)) < 1e-4  # type: ignore[union-attr]


def test_an_iresnet_is_rebuilt_from_its_exported_graph(tmp_path: Path) -> None:
    import torch

    from bfm_deploy.models.onnx_export import export_onnx
    from bfm_deploy.models import get_model
    from bfm_deploy.models.pretrained import load_state_dict_checked, onnx_state_dict

    torch.manual_seed(0)
    model = get_model("r18").eval()
    with torch.no_grad():  # statistics unlike the initial ones, so that folding them into the convs matters
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
            elif isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(0.1, 0.3)
    path = tmp_path / "full.onnx"
    export_onnx(model, path, "embedding", 17)
    rebuilt = get_model("r18")
    load_state_dict_checked(rebuilt, onnx_state_dict(path, rebuilt), path.name)
    rebuilt.eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32))
    with torch.inference_mode():
        a, b = model(x).numpy(), rebuilt(x).numpy()
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.9999


def test_graphs_of_another_architecture_are_refused_in_one_line(tmp_path: Path) -> None:
    import torch

    from bfm_deploy.models import get_model
    from bfm_deploy.models.pretrained import onnx_state_dict

    with pytest.raises(BfmError, match="is not the Table I classifier graph"):
        onnx_state_dict(DEMO / "full.onnx", get_model("classifier"))
    with pytest.raises(BfmError, match="does not have the IResNet layout"):
        onnx_state_dict(DEMO / "full.onnx", get_model("r18"))
    with pytest.raises(BfmError, match="cannot rebuild a Linear from x.onnx yet"):
        onnx_state_dict(tmp_path / "x.onnx", torch.nn.Linear(2, 2))
