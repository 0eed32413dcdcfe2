"""The openvino backend on this CPU: both precisions against onnxruntime, the parity gate (its verdict cached,
a tampered graph refused) and ``--backend auto``'s choice. Real faces: the package's parity probes and the
examples' photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bfm_deploy.backends import BACKENDS, create_backend, openvino_backend
from bfm_deploy.backends.auto import choose
from bfm_deploy.backends.parity import probe_crops, probe_photos
from bfm_deploy.cpu_features import bf16_capable
from bfm_deploy.errors import BfmError
from bfm_deploy.tensor import preprocess

PRECISIONS = ["f32", pytest.param("bf16", marks=pytest.mark.skipif(not bf16_capable(), reason="no BF16 on this CPU"))]


def test_precision_follows_the_cpu() -> None:
    # BF16 where AMX does the matrix work; on AVX-512 BF16 alone FP32 measured faster, so auto keeps FP32
    assert openvino_backend.resolve_precision("auto", frozenset({"avx512f", "amx_tile", "amx_bf16"})) == "bf16"
    assert openvino_backend.resolve_precision("auto", frozenset({"avx512f", "avx512_bf16"})) == "f32"
    assert openvino_backend.resolve_precision("bf16", frozenset({"avx512f", "avx512_bf16"})) == "bf16"
    assert openvino_backend.resolve_precision("auto", frozenset({"avx2", "avx512f"})) == "f32"
    with pytest.raises(BfmError, match="bf16 needs a CPU with AMX or AVX-512 BF16"):
        openvino_backend.resolve_precision("bf16", frozenset({"avx2"}))
    with pytest.raises(BfmError, match="unknown precision 'fp8'"):
        openvino_backend.resolve_precision("fp8")


ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def reference(demo):  # type: ignore[no-untyped-def]
    with create_backend("ort", demo, device="cpu") as backend:
        yield backend


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_network_matches_onnxruntime(precision: str, demo, reference, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    batch = preprocess(list(probe_crops()))
    with create_backend("openvino", demo, precision=precision, cache_dir=tmp_path) as backend:
        assert backend.describe()["precision"] == precision and backend.startup()["parity"]["cached"] is False
        for network in ("full", "partial"):
            got, want = backend.infer(network, batch), reference.infer(network, batch)
            assert got.shape == want.shape == (len(batch), 512) and got.dtype == np.float32
            floor = 0.99999 if precision == "f32" else 0.999
            assert _cosine(got, want).min() >= floor
        concurrent = backend.infer_concurrent({"full": batch[:3], "partial": batch})
        np.testing.assert_allclose(concurrent["full"], backend.infer("full", batch[:3]), rtol=0, atol=1e-6)
        assert concurrent["partial"].shape == (len(batch), 512)
        logits = backend.infer("classifier", batch)
        assert (logits.argmax(1) == reference.infer("classifier", batch).argmax(1)).all()
        canvas = np.zeros((1, 3, 320, 320), np.float32)
        assert [o.shape for o in backend.detect(canvas)] == [o.shape for o in reference.detect(canvas)]


def test_a_second_start_reads_the_verdict_and_runs_no_reference(demo, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    create_backend("openvino", demo, precision="f32", cache_dir=tmp_path).close()
    assert list(tmp_path.glob("parity-*.json")), "the passing verdict was written"

    def no_reference(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("onnxruntime was run again")

    monkeypatch.setattr("bfm_deploy.backends.ort.OrtBackend.__init__", no_reference)
    with create_backend("openvino", demo, precision="f32", cache_dir=tmp_path) as backend:
        started = backend.startup()
    assert started["parity"]["cached"] is True and started["loaded_from_cache"] is True


def test_a_tampered_graph_is_refused(demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # OpenVINO is handed E_P's graph where E_F's should be (same input and output names): a wrong network that
    # compiles and runs, which only the comparison with onnxruntime can catch.
    read = openvino_backend.OpenVinoBackend._read_model

    def swapped(core: object, path: Path) -> object:
        return read(core, path.with_name("partial.onnx") if path.name == "full.onnx" else path)

    monkeypatch.setattr(openvino_backend.OpenVinoBackend, "_read_model", staticmethod(swapped))
    with pytest.raises(BfmError, match=r"openvino-f32 backend: full disagrees with onnxruntime .*cosine 0\.\d+ < 0\.999"):
        create_backend("openvino", demo, precision="f32", cache_dir=tmp_path)
    assert not list(tmp_path.glob("parity-*.json")), "no verdict is kept for a refused graph"


def test_the_detector_finds_the_same_faces(demo, reference, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from bfm_deploy.backends.parity import measure

    with create_backend("openvino", demo, precision="f32", cache_dir=tmp_path) as backend:
        report = measure(demo, reference, backend)
    assert report.detector_faces == len(probe_photos())  # one face a photo
    assert report.min_box_iou is not None and report.min_box_iou > 0.99
    assert report.max_landmark_px is not None and report.max_landmark_px < 0.5


def _canvases(count: int) -> np.ndarray:
    from bfm_deploy.detect.network import letterbox

    photos = (probe_photos() * count)[:count]
    return np.stack([letterbox(photo, 320)[0] for photo in photos])


def test_the_detector_normalises_the_canvases_in_its_graph(demo, reference, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from bfm_deploy.tensor import to_nchw

    spec = demo.detector
    with create_backend("openvino", demo, precision="f32", cache_dir=tmp_path) as backend:
        def no_host_path(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("the canvases went through the host's normalisation and the float graph")

        with monkeypatch.context() as patched:
            patched.setattr(backend, "detect", no_host_path)
            # one photo (the latency graph) and more photos than streams (the streams graph, image by image)
            for count in (1, 5):
                canvases = _canvases(count)
                got = backend.detect_canvases(canvases, spec.mean, spec.std, True)
                want = reference.detect(to_nchw(list(canvases), spec.mean, spec.std, True))
                assert [g.shape for g in got] == [w.shape for w in want]
                for g, w in zip(got, want):
                    np.testing.assert_allclose(g, w, rtol=0, atol=2e-3)
        # a normalisation the graph was not built for goes the host's way, and still gives the right outputs
        canvases = _canvases(2)
        other = backend.detect_canvases(canvases, 127.0, 128.0, True)
        np.testing.assert_allclose(other[0], reference.detect(to_nchw(list(canvases), 127.0, 128.0, True))[0],
                                   rtol=0, atol=2e-3)


def test_a_detector_wrong_on_canvases_is_refused(demo, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # The uint8 graphs built with the channels left in BGR order: the float graph (``detect``) is right, so a gate
    # that checked only that one would pass what the runtime runs.
    from dataclasses import replace

    build = openvino_backend._on_canvases
    monkeypatch.setattr(openvino_backend, "_on_canvases",
                        lambda ov, model, spec: build(ov, model, replace(spec, channel_order="BGR")))
    with pytest.raises(BfmError, match="openvino-f32 backend: the detector"):
        create_backend("openvino", demo, precision="f32", cache_dir=tmp_path)
    assert not list(tmp_path.glob("parity-*.json"))


@pytest.mark.parametrize("pays", [True, False])
def test_auto_prefers_openvino_on_an_avx512_cpu(pays: bool, demo, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BFM_OPENVINO_CACHE", str(tmp_path))
    monkeypatch.setattr(openvino_backend, "avx512", lambda flags=None: pays)
    with choose(demo, BACKENDS, gpu_present=False) as backend:
        assert backend.name.startswith("openvino-") if pays else backend.name == "ort"


def test_the_bench_compares_the_pipeline_with_ort(data_dir: Path) -> None:
    from bfm_deploy.bench import pipeline
    from bfm_deploy.bench.backend_compare import CompareConfig, compare_backends, format_comparison
    from tests.conftest import DEMO_BUNDLE

    aligned = pipeline.decode_pairs(pipeline.lfw_pairs(data_dir, "aligned112", 2))
    raw = pipeline.lfw_pairs(data_dir, "raw-fold1", 1)
    report = compare_backends(DEMO_BUNDLE, ["openvino-f32", "ort"], aligned, raw,
                              CompareConfig(rounds=1, batch1_calls=1, startups=1))
    rows = report["backends"]
    assert list(rows) == ["ort", "openvino-f32"]  # the reference first, whatever order it was named in
    assert rows["ort"]["aligned_vs_ort"] == rows["ort"]["raw_vs_ort"] == 1.0
    assert rows["openvino-f32"]["backend"]["precision"] == "f32" and set(rows["openvino-f32"]["startup_s"]) == {"cold", "warm"}
    assert rows["openvino-f32"]["same_decisions_as_ort"] == 1.0  # FP32: the same answers on these pairs
    for row in rows.values():  # the batch-1 split: every network timed (on the backend's own detector path), parts adding up
        split = row["batch1_split_ms"]
        assert min(split["detect"], split["classify"], split["extract"]) > 0 and split["rest"] >= 0
        assert abs(split["detect"] + split["classify"] + split["extract"] + split["rest"] - split["call"]) < 0.03
    assert "openvino-f32" in format_comparison(report) and "where the time goes" in format_comparison(report)
