"""The torch backend runs the shipped bundle, which carries no weights.safetensors: rebuilt from its ONNX."""

from __future__ import annotations

import importlib.util

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bfm_deploy.backends import create_backend
from bfm_deploy.bundle import Bundle
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
from bfm_deploy.tensor import preprocess
from bfm_deploy.verifier import Verifier

# The torch backend is the train extra's (torch and bfm_models); its refusals without them are tested either way.
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch (the train extra)")

DEMO = Path(__file__).resolve().parents[2] / "engines" / "demo"


@needs_torch
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
        with Verifier(bundle, backend=torch_backend) as on_torch, Verifier(bundle, backend=ort_backend) as on_ort:
            _assert_same_decisions(on_torch, on_ort, crops, max_score_difference=1e-4)


def _assert_same_decisions(got: Verifier, want: Verifier, crops: Sequence[np.ndarray] | np.ndarray,
                           max_score_difference: float) -> None:
    """verify_many on consecutive crops as pairs: the same decisions and routes, scores within the bound."""
    pairs = [(crops[i], crops[i + 1]) for i in range(0, len(crops) - 1, 2)]
    got_pairs, want_pairs = list(got.verify_many(pairs, aligned=True)), list(want.verify_many(pairs, aligned=True))
    assert [(r.same, r.route) for r in got_pairs] == [(r.same, r.route) for r in want_pairs]  # type: ignore[union-attr]
    assert max(abs(r.score - w.score) for r, w in zip(got_pairs, want_pairs)) < max_score_difference  # type: ignore[union-attr]


@needs_torch
def test_an_iresnet_is_rebuilt_from_its_exported_graph(tmp_path: Path) -> None:
    import torch

    from bfm_models.onnx_export import export_onnx
    from bfm_models import create_model
    from bfm_models.pretrained import load_state_dict_checked, onnx_state_dict

    torch.manual_seed(0)
    model = create_model("r18").eval()
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
    rebuilt = create_model("r18")
    load_state_dict_checked(rebuilt, onnx_state_dict(path, rebuilt), path.name)
    rebuilt.eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32))
    with torch.inference_mode():
        a, b = model(x).numpy(), rebuilt(x).numpy()
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.9999


@needs_torch
def test_graphs_of_another_architecture_are_refused_in_one_line(tmp_path: Path) -> None:
    import torch

    from bfm_models import create_model
    from bfm_models.pretrained import onnx_state_dict

    with pytest.raises(BfmError, match="is not the Table I classifier graph"):
        onnx_state_dict(DEMO / "full.onnx", create_model("classifier"))
    with pytest.raises(BfmError, match="does not have the IResNet layout"):
        onnx_state_dict(DEMO / "full.onnx", create_model("r18"))
    with pytest.raises(BfmError, match="cannot rebuild a Linear from x.onnx yet"):
        onnx_state_dict(tmp_path / "x.onnx", torch.nn.Linear(2, 2))


# ---- the detector as a torch module, and the fast-path choices (their CPU-testable parts) ------------------


@needs_torch
def test_the_detector_rebuilt_in_torch_finds_what_onnx_runtime_finds_on_raw_photos(data_dir: Path, demo: Bundle) -> None:
    from bfm_deploy.backends.torch_options import TorchOptions
    from bfm_deploy.detect import open_detector

    photos = (sorted((data_dir / "lfw" / "raw-fold1").glob("*/*.jpg"))[::40]
              + sorted((data_dir / "mfr2").glob("*/*.png"))[::24])
    images = [load_image(p) for p in photos]
    assert len(images) >= 30
    options = TorchOptions(detector="torch", gpu_normalise=True)  # the GPU's route: uint8 canvases, torch graph
    with create_backend("torch", demo, device="cpu", options=options) as on_torch, \
            create_backend("ort", demo, device="cpu") as on_ort:
        assert on_torch.detector_engine == "torch"  # type: ignore[attr-defined]
        got = open_detector("bundle", demo, on_torch).detect_batch(images)  # type: ignore[attr-defined]
        want = open_detector("bundle", demo, on_ort).detect_batch(images)  # type: ignore[attr-defined]
    assert sum(len(faces) for faces in want) >= len(images)
    for path, a, b in zip(photos, got, want):
        assert len(a) == len(b), path
        for fa, fb in zip(a, b):
            assert abs(fa.score - fb.score) < 1e-4, path
            assert np.abs(fa.box - fb.box).max() < 0.01, path  # pixels of the photo
            assert np.abs(fa.landmarks - fb.landmarks).max() < 0.01, path


@needs_torch
def test_by_default_the_cpu_keeps_the_detector_on_onnx_runtime(demo: Bundle) -> None:
    with create_backend("torch", demo, device="cpu") as backend:
        assert backend.detector_engine == "onnxruntime"  # type: ignore[attr-defined]
        blob = np.zeros((1, 3, 320, 320), np.float32)
        assert [o.shape[1:] for o in backend.detect(blob)][:3] == [(3200, 1), (800, 1), (200, 1)]


@needs_torch
def test_detector_graphs_with_unknown_operators_are_refused_in_one_line() -> None:
    from bfm_models.onnx_detector import OnnxDetector
    from bfm_deploy.onnx_graph import Graph, Node

    graph = Graph((Node("Mul", ("x", "y"), ("z",), {}), Node("Relu", ("z",), ("out",), {})), {})
    with pytest.raises(BfmError, match=r"operators Mul are not supported") as info:
        OnnxDetector(graph, "x", ["out"], "odd.onnx")
    assert "\n" not in str(info.value)
    with pytest.raises(BfmError, match="has no output 'nope'"):
        OnnxDetector(Graph((Node("Relu", ("x",), ("out",), {}),), {}), "x", ["nope"], "odd.onnx")


@needs_torch
def test_uint8_normalisation_on_the_device_is_bit_identical_to_the_hosts(data_dir: Path) -> None:
    import torch

    from bfm_deploy.backends.torch_lane import Normalisation, normalise_uint8
    from bfm_deploy.tensor import to_nchw

    crops = np.stack([load_image(p) for p in sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[:8]])
    every_value = np.arange(256, dtype=np.uint8).repeat(3 * 112 * 112 // 256 + 1)[: 3 * 112 * 112]
    crops = np.concatenate([crops, every_value.reshape(1, 112, 112, 3)])
    got = normalise_uint8(torch.from_numpy(crops), Normalisation(127.5, 127.5, reverse_channels=True)).numpy()
    np.testing.assert_array_equal(got, preprocess(list(crops)))  # bit for bit, RGB order included
    # the detector's normalisation (std 128, RGB) and a BGR network's
    for mean, std, reverse in ((127.5, 128.0, True), (104.0, 57.0, False)):
        got = normalise_uint8(torch.from_numpy(crops), Normalisation(mean, std, reverse)).numpy()
        np.testing.assert_array_equal(got, to_nchw(list(crops), mean, std, reverse))


def test_torch_options_resolve_per_device_and_refuse_cuda_choices_on_the_cpu() -> None:
    from bfm_deploy.backends.torch_options import TorchOptions

    cpu = TorchOptions().resolve("cpu")
    assert (cpu.precision, cpu.channels_last, cpu.pinned, cpu.cuda_graphs, cpu.streams, cpu.gpu_normalise,
            cpu.detector_in_torch) == ("fp32", False, False, False, False, False, False)
    cuda = TorchOptions().resolve("cuda")
    assert (cuda.precision, cuda.channels_last, cuda.pinned, cuda.cuda_graphs, cuda.streams, cuda.gpu_normalise,
            cuda.detector_in_torch) == ("fp16", True, True, False, True, True, True)  # graphs opt-in until measured
    assert TorchOptions(cuda_graphs=True).resolve("cuda").cuda_graphs
    plain = TorchOptions.plain().resolve("cuda")
    assert (plain.precision, plain.channels_last, plain.pinned, plain.cuda_graphs, plain.streams,
            plain.gpu_normalise) == ("fp16", False, False, False, False, False)
    assert TorchOptions(precision="bf16").resolve("cpu").precision == "bf16"
    for bad in ({"precision": "fp16"}, {"cuda_graphs": True}, {"pinned": True}, {"streams": True}):
        with pytest.raises(BfmError):
            TorchOptions(**bad).resolve("cpu")  # type: ignore[arg-type]
    with pytest.raises(BfmError, match="unknown precision"):
        TorchOptions(precision="int8")  # type: ignore[arg-type]
    # a batch is padded to the next captured size; max_batch is always one, larger batches run in chunks
    resolved = TorchOptions(max_batch=100).resolve("cuda")
    assert resolved.graph_batches == (1, 2, 4, 8, 16, 32, 64, 100)
    assert [resolved.bucket(n) for n in (1, 3, 33, 64, 65, 100)] == [1, 4, 64, 64, 100, 100]
    with pytest.raises(BfmError):
        resolved.bucket(101)


@needs_torch
def test_device_normalisation_chunks_and_channels_last_keep_the_cpu_results(data_dir: Path, demo: Bundle) -> None:
    from bfm_deploy.backends.torch_options import TorchOptions

    crops = np.stack([load_image(p) for p in sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[::500][:10]])
    batch = preprocess(list(crops))
    fast = TorchOptions(channels_last=True, gpu_normalise=True, max_batch=4)  # 10 faces: chunks of 4, 4 and 2
    with create_backend("torch", demo, device="cpu") as plain, \
            create_backend("torch", demo, device="cpu", options=fast) as other:
        for network in ("classifier", "full", "partial"):
            want = plain.infer(network, batch)
            assert np.array_equal(plain.infer_crops(network, crops), want)  # host normalisation: the same tensor
            got = other.infer_crops(network, crops)  # type: ignore[attr-defined]
            assert got.shape == want.shape
            assert np.abs(got - want).max() < 1e-4, network
        both = other.infer_concurrent_crops({"full": crops, "partial": crops[:3]})  # type: ignore[attr-defined]
        assert np.abs(both["full"] - plain.infer("full", batch)).max() < 1e-4
        assert np.abs(both["partial"] - plain.infer("partial", batch[:3])).max() < 1e-4
        assert other.infer("full", batch[:0]).shape == (0, 512)
        # the Verifier hands a backend that takes uint8 its crops, not the float tensor: the same decisions
        assert other.takes_uint8 and not plain.takes_uint8
        with Verifier(demo, backend=plain) as v_plain, Verifier(demo, backend=other) as v_uint8:
            _assert_same_decisions(v_uint8, v_plain, crops, max_score_difference=1e-5)
            embedded = v_uint8.embed(list(crops[:3]), aligned=True)
            assert np.abs(embedded - v_plain.embed(list(crops[:3]), aligned=True)).max() < 1e-5
        with pytest.raises(BfmError, match="uint8 images"):
            other.infer_crops("full", batch)  # type: ignore[attr-defined]
