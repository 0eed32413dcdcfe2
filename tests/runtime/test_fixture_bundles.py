"""The torch-free test bundle (tests/fixtures/bundles.py) and the in-place initialiser rewrite it is built with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
from bfm_deploy.onnx_graph import raw_initializers, read_graph, replace_initializers
from tests.fixtures.bundles import DARK_PIXEL_MEAN, DEMO_BUNDLE, WEIGHTS_FILE


def test_replace_initializers_changes_only_the_named_tensors(tmp_path: Path) -> None:
    data = (DEMO_BUNDLE / "classifier.onnx").read_bytes()
    before = read_graph(DEMO_BUNDLE / "classifier.onnx").initializers
    assert set(raw_initializers(data)) == set(before)
    (tmp_path / "c.onnx").write_bytes(replace_initializers(data, {"fc2.bias": np.array([1.5, -2.0], np.float32)}))
    after = read_graph(tmp_path / "c.onnx").initializers
    assert after["fc2.bias"].tolist() == [1.5, -2.0] and before["fc2.bias"].tolist() != [1.5, -2.0]
    assert all(np.array_equal(after[k], v) for k, v in before.items() if k != "fc2.bias")
    with pytest.raises(BfmError, match=r"'fc2.bias' has shape \(2,\), not \(3,\)"):
        replace_initializers(data, {"fc2.bias": np.zeros(3, np.float32)})
    with pytest.raises(BfmError, match="no raw_data initialiser 'fc3.bias'"):
        replace_initializers(data, {"fc3.bias": np.zeros(2, np.float32)})


def grey(value: int) -> np.ndarray:
    return np.full((112, 112, 3), value, np.uint8)


def test_runtime_bundle_classifier_follows_the_brightness_rule(runtime_bundle: Path) -> None:
    from bfm_deploy.verifier import Verifier

    cut = int(DARK_PIXEL_MEAN)
    with Verifier(runtime_bundle, backend="ort") as verifier:
        probs = verifier.mask_probability([grey(0), grey(cut - 3), grey(cut + 3), grey(255)], aligned=True)
        assert probs[0] > 0.99 and probs[1] > 0.9 and probs[2] < 0.1 and probs[3] < 0.01
        results = [verifier.verify(grey(200), grey(200), aligned=True), verifier.verify(grey(10), grey(200), aligned=True)]
        assert [r.route for r in results] == ["full", "partial"]


def test_runtime_bundle_classifier_is_the_torch_brightness_classifier(weights_bundle: Path, data_dir: Path) -> None:
    """The graph (ort) and conftest's torch classifier agree, and the weights file holds that classifier."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from bfm_deploy.backends import create_backend
    from bfm_deploy.bundle import Bundle
    from bfm_deploy.tensor import preprocess
    from bfm_models import create_model
    from tests.conftest import DARKEN, brightness_classifier

    crops = [load_image(p) for p in sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[:8]]
    batch = preprocess(crops + [(c.astype(np.float32) * DARKEN).astype(np.uint8) for c in crops])
    with create_backend("ort", Bundle.load(weights_bundle)) as backend:
        by_graph = backend.infer("classifier", batch)
    with torch.inference_mode():
        by_torch = brightness_classifier()(torch.from_numpy(batch)).numpy()
        loaded = create_model("classifier").eval()
        state = load_file(str(weights_bundle / WEIGHTS_FILE))
        result = loaded.load_state_dict({k.removeprefix("classifier."): v for k, v in state.items()}, strict=False)
        assert not result.unexpected_keys and all(k.endswith("num_batches_tracked") for k in result.missing_keys)
        by_weights = loaded(torch.from_numpy(batch)).numpy()
    assert np.allclose(by_graph, by_torch, atol=1e-3) and np.allclose(by_weights, by_torch, atol=1e-3)
    assert (by_graph[:8, 1] < by_graph[:8, 0]).all() and (by_graph[8:, 1] > by_graph[8:, 0]).all()
