"""Engine rules that need neither TensorRT nor a GPU: profiles, folder names, the engine manifest and its
mismatch messages, timing cache paths, and clean refusals where TensorRT or CUDA is missing."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from bfm_deploy import cuda_runtime
from bfm_deploy.engine.sources import read_input_chw, read_sources
from bfm_deploy.engine.spec import (
    BatchProfile,
    BuildOptions,
    EngineEntry,
    EngineManifest,
    GpuInfo,
    RuntimeFacts,
    build_manifest,
    check_manifest,
    default_timing_cache_path,
    engine_dir,
    engine_dir_name,
    manifest_differences,
    missing_engines_message,
    rebuild_command,
)
from bfm_deploy.errors import BfmError
from tests.fixtures.fake_gpu import (DETECTOR_OUTPUTS, FACTS, H100, Executed, FakeCuda, FakeTrt, fake_embed,
                                     fake_trt_imports, install_fake_gpu)

ROOT = Path(__file__).resolve().parents[2]
NETWORKS = ("classifier", "full", "partial")
EMBEDDING = 8  # the tiny test graphs' embedding size (the fake engines compute 8 values too)


def _bundle(tmp_path: Path, name: str = "demo", graphs: dict[str, bytes] | None = None) -> Path:
    """A bundle folder by the ARCHITECTURE.md contract, with tiny graphs (embedding size 8) unless ``graphs``."""
    root = tmp_path / name
    root.mkdir()
    graphs = graphs or _tiny_graphs()
    models = {}
    for network in NETWORKS:
        data = graphs[network]
        (root / f"{network}.onnx").write_bytes(data)
        models[network] = {
            "file": f"{network}.onnx",
            "architecture": "classifier" if network == "classifier" else "mbf",
            "params": 1,
            "macs": 1,
            "sha256": hashlib.sha256(data).hexdigest(),
            "input": "input",
            "output": "logits" if network == "classifier" else "embedding",
        }
    template = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
    manifest = {
        "format": "bfm-bundle",
        "format_version": 1,
        "name": name,
        "created": "2026-11-28T00:00:00Z",
        "input": {
            "size": [112, 112], "layout": "NCHW", "channel_order": "RGB", "dtype": "float32",
            "normalisation": {"mean": 127.5, "std": 127.5},
            "alignment": {"method": "similarity-5pt", "template": template},
        },
        "embedding_size": EMBEDDING,
        "metric": "cosine",
        "thresholds": {"full": {"value": 0.35, "calibration": "test"}, "partial": {"value": 0.3, "calibration": "test"}},
        "models": models,
        "source": {"checkpoint": "test", "sha256": "0" * 64},
        "tools": {"bfm": "0.1.0"},
        "licence": "test",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _manifest(bundle: Path, facts: RuntimeFacts = FACTS, profile: BatchProfile = BatchProfile()) -> EngineManifest:
    sources = read_sources(bundle)
    entries = {
        n: EngineEntry(f"{n}.engine", sources[n].sha256, hashlib.sha256(n.encode()).hexdigest(), "input", sources[n].output)
        for n in NETWORKS
    }
    return build_manifest(facts, BuildOptions(profile=profile), entries, "2026-11-28T00:00:00Z", {"bfm": "0.1.0"})


@pytest.mark.parametrize("values", [(1, 32, 256), (1, 1, 1), (8, 8, 64)])
def test_valid_profiles_give_nchw_shapes(values: tuple[int, int, int]) -> None:
    profile = BatchProfile(*values)
    low, opt, high = profile.shapes((3, 112, 112))
    assert (low[0], opt[0], high[0]) == values
    assert low[1:] == opt[1:] == high[1:] == (3, 112, 112)


@pytest.mark.parametrize("values", [(0, 1, 1), (2, 1, 4), (1, 64, 32), (4, 8, 2), (-1, 1, 1)])
def test_profiles_need_min_le_opt_le_max(values: tuple[int, int, int]) -> None:
    with pytest.raises(BfmError, match=f"min={values[0]} opt={values[1]} max={values[2]}"):
        BatchProfile(*values)


def test_engine_dir_names_version_and_compute_capability(tmp_path: Path) -> None:
    assert engine_dir_name("10.16.1.11", H100) == "trt-10.16.1.11-sm90"
    assert engine_dir_name("11.4.0.106", GpuInfo("NVIDIA GeForce RTX 4090", 8, 9)) == "trt-11.4.0.106-sm89"
    assert engine_dir(tmp_path, FACTS) == tmp_path / "trt-10.16.1.11-sm90"
    with pytest.raises(BfmError):
        engine_dir_name("10/../../x", H100)


def test_manifest_round_trips(tmp_path: Path) -> None:
    manifest = _manifest(_bundle(tmp_path), profile=BatchProfile(1, 16, 128))
    text = manifest.to_json()
    data = json.loads(text)
    assert data["gpu"] == {"name": H100.name, "compute_capability": "9.0"}
    assert data["precision"] == "fp16" and data["tensorrt_version"] == "10.16.1.11"
    assert data["profile"] == {"min": 1, "opt": 16, "max": 128}
    assert set(data["engines"]) == set(NETWORKS)
    assert EngineManifest.from_json(text) == manifest
    path = tmp_path / "engine_manifest.json"
    path.write_text(text)
    assert EngineManifest.load(path) == manifest


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "malformed engine manifest"),
        ('{"format": "bfm-bundle"}', "not an engine manifest"),
        ('{"format": "bfm-engines", "format_version": 99}', "unsupported format_version 99"),
        ('{"format": "bfm-engines", "format_version": 1, "gpu": {}}', "malformed engine manifest"),
    ],
)
def test_bad_manifests_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(BfmError, match=message) as info:
        EngineManifest.from_json(text)
    assert "\n" not in str(info.value)


def test_manifest_needs_all_three_engines(tmp_path: Path) -> None:
    entry = EngineEntry("full.engine", "a", "b", "input", "embedding")
    with pytest.raises(BfmError, match="classifier, partial"):
        build_manifest(FACTS, BuildOptions(), {"full": entry}, "now")


def test_matching_manifest_passes(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    shas = {n: s.sha256 for n, s in read_sources(bundle).items()}
    check_manifest(_manifest(bundle), FACTS, shas, bundle)
    assert manifest_differences(_manifest(bundle), FACTS, shas) == []


@pytest.mark.parametrize(
    "facts, onnx_change, says",
    [
        (RuntimeFacts("10.13.3.9", H100), None, ["TensorRT version", "10.16.1.11", "10.13.3.9"]),
        (RuntimeFacts("10.16.1.11", GpuInfo("NVIDIA H200", 9, 0)), None, ["GPU", "H100", "H200"]),
        (RuntimeFacts("10.16.1.11", GpuInfo(H100.name, 8, 9)), None, ["compute capability", "sm90", "sm89"]),
        (FACTS, "partial", ["partial.onnx sha256"]),
    ],
)
def test_each_mismatch_names_what_differs_and_the_rebuild_command(
    tmp_path: Path, facts: RuntimeFacts, onnx_change: str | None, says: list[str]
) -> None:
    bundle = _bundle(tmp_path)
    profile = BatchProfile(1, 16, 128)
    manifest = _manifest(bundle, profile=profile)
    if onnx_change:  # a re-export: new graph, manifest updated to match
        graph = _tiny_onnx("embedding", EMBEDDING, seed=9)
        (bundle / f"{onnx_change}.onnx").write_bytes(graph)
        data = json.loads((bundle / "manifest.json").read_text())
        data["models"][onnx_change]["sha256"] = hashlib.sha256(graph).hexdigest()
        (bundle / "manifest.json").write_text(json.dumps(data))
    shas = {n: s.sha256 for n, s in read_sources(bundle).items()}
    with pytest.raises(BfmError) as info:
        check_manifest(manifest, facts, shas, bundle)
    message = str(info.value)
    assert "\n" not in message
    for fragment in says:
        assert fragment in message
    command = f"bfm-build-engine {bundle} --min-batch 1 --opt-batch 16 --max-batch 128 --overwrite"
    assert message.endswith(f"rebuild with: {command}")
    assert command == rebuild_command(bundle, profile)


def test_mismatch_lists_every_difference(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    other = RuntimeFacts("11.4.0.106", GpuInfo("NVIDIA GeForce RTX 4090", 8, 9))
    diffs = manifest_differences(_manifest(bundle), other, {n: "0" * 64 for n in NETWORKS})
    assert len(diffs) == 3 + len(NETWORKS)


def test_missing_engines_message_points_at_other_builds(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    (bundle / "trt-10.13.3.9-sm90").mkdir()
    message = missing_engines_message(bundle, FACTS, BatchProfile())
    assert "trt-10.13.3.9-sm90" in message
    assert message.endswith(f"bfm-build-engine {bundle} --min-batch 1 --opt-batch 32 --max-batch 256 --overwrite")


def test_rebuild_command_quotes_paths_with_spaces(tmp_path: Path) -> None:
    assert rebuild_command(tmp_path / "my bundle", BatchProfile()).startswith(f"bfm-build-engine '{tmp_path}/my bundle' ")


def test_timing_cache_path_is_per_version_and_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = default_timing_cache_path(FACTS)
    assert path == tmp_path / "xdg" / "bfm" / "timing-trt-10.16.1.11-sm90.cache"
    other = default_timing_cache_path(RuntimeFacts("10.16.1.11", GpuInfo("x", 8, 9)))
    assert other != path
    assert default_timing_cache_path(FACTS, tmp_path / "c") == tmp_path / "c" / "timing-trt-10.16.1.11-sm90.cache"


def test_build_options_workspace(tmp_path: Path) -> None:
    assert BuildOptions(workspace_gb=4).workspace_bytes == 4 << 30
    assert BuildOptions(workspace_gb=0.5).workspace_bytes == 1 << 29
    with pytest.raises(BfmError, match="--workspace-gb"):
        BuildOptions(workspace_gb=0)


def test_sources_hash_the_onnx_files(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    sources = read_sources(bundle)
    assert sources["full"].sha256 == hashlib.sha256(_tiny_graphs()["full"]).hexdigest()
    assert sources["classifier"].output == "logits" and sources["partial"].input == "input"
    assert read_input_chw(bundle) == (3, 112, 112)
    (bundle / "full.onnx").write_bytes(b"tampered")
    with pytest.raises(BfmError, match="full.onnx does not match the sha256"):
        read_sources(bundle)
    (bundle / "full.onnx").write_bytes(_tiny_graphs()["full"])
    (bundle / "partial.onnx").unlink()
    with pytest.raises(BfmError, match="partial.onnx is missing"):
        read_sources(bundle)
    with pytest.raises(BfmError, match="is not a bundle"):
        read_sources(tmp_path)


def _no_tensorrt_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``import tensorrt`` fails the way it does without TensorRT's native libraries."""
    shim = tmp_path / "shim" / "tensorrt"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('libnvinfer.so.10: cannot open shared object file')\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim.parent), str(ROOT)]))


def test_build_engine_without_tensorrt_says_so_in_one_line(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    env = _no_tensorrt_env(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", "from bfm_deploy.engine.cli import main; main()", str(bundle)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT is not available (libnvinfer.so.10")
    assert not list(bundle.glob("trt-*"))
    # a wrong bundle path is reported first, TensorRT or not
    missing = subprocess.run([sys.executable, "-c", "from bfm_deploy.engine.cli import main; main()", str(tmp_path / "nope")],
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith(f"error: bundle {tmp_path / 'nope'} not found")
    # no BUNDLE: the default bundle, as --bundle everywhere ($BFM_BUNDLE first)
    default = subprocess.run([sys.executable, "-c", "from bfm_deploy.engine.cli import main; main()"],
                             env={**env, "BFM_BUNDLE": str(tmp_path / "elsewhere")}, capture_output=True, text=True, timeout=60)
    assert default.returncode == 2 and default.stderr.startswith(f"error: bundle {tmp_path / 'elsewhere'} not found")


def test_build_engine_rejects_a_bad_profile_before_anything_else(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bfm_deploy.engine import cli

    monkeypatch.setattr(cli, "require_tensorrt", lambda: "10.16.1.11")
    result = CliRunner().invoke(cli.main, [str(_bundle(tmp_path)), "--min-batch", "64", "--opt-batch", "8"])
    assert result.exit_code == 2
    assert "min=64 opt=8 max=256" in result.output


def test_trt_backend_without_tensorrt_is_a_bfm_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    from bfm_deploy.backends.trt import TrtBackend

    with pytest.raises(BfmError, match="TensorRT is not available"):
        TrtBackend(_bundle(tmp_path))


def test_cuda_runtime_without_driver_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    if cuda_runtime._IMPORT_ERROR is None:
        code = cuda_runtime.cudart.cudaError_t.cudaErrorInsufficientDriver
        monkeypatch.setattr(cuda_runtime.cudart, "cudaGetDeviceCount", lambda: (code, 0))
        with pytest.raises(BfmError, match="^no CUDA driver or GPU: cudaGetDeviceCount returned cudaErrorInsufficientDriver"):
            cuda_runtime.CudaRuntime()
    monkeypatch.setattr(cuda_runtime, "_IMPORT_ERROR", "No module named 'cuda'")
    with pytest.raises(BfmError, match="cuda-python .* is not importable"):
        cuda_runtime.CudaRuntime()


def test_gpu_check_without_cuda_exits_cleanly(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the GPU check is a PyTorch script (it says so in one line without torch)")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", BFM_GPU_CHECK_WORKDIR=str(tmp_path))
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check" / "run.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA GPU usable here"), result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_profile_stays_valid_when_replaced() -> None:
    # frozen dataclasses: a profile cannot be edited into an invalid state after validation
    with pytest.raises(BfmError):
        replace(BatchProfile(), min=0)


# ---- FP16 graphs for TensorRT >= 11 and the build pipeline on a fake TensorRT -------------------------------


def _tiny_onnx(output: str, width: int, seed: int = 0) -> bytes:
    """A small Conv-BN-PRelu-Gemm graph with the bundle's tensor contract (dynamic batch named 'batch')."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = {
        "w": rng.normal(0, 0.2, (4, 3, 3, 3)), "b": rng.normal(0, 0.1, 4),
        "scale": rng.uniform(0.5, 1.5, 4), "bias": rng.normal(0, 0.1, 4),
        "mean": rng.normal(0, 0.1, 4), "var": rng.uniform(0.5, 1.5, 4),
        "slope": np.full((4, 1, 1), 0.25), "fc": rng.normal(0, 0.05, (width, 4 * 28 * 28)), "fcb": rng.normal(0, 0.1, width),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], strides=[4, 4], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"], epsilon=1e-5),
        helper.make_node("PRelu", ["n", "slope"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], [output], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


@functools.lru_cache(maxsize=1)
def _tiny_graphs() -> dict[str, bytes]:
    return {"classifier": _tiny_onnx("logits", 2, 1), "full": _tiny_onnx("embedding", EMBEDDING, 2),
            "partial": _tiny_onnx("embedding", EMBEDDING, 3)}


def _tiny_bundle(tmp_path: Path) -> Path:
    return _bundle(tmp_path)


def _tiny_detector_onnx() -> bytes:
    """The fake detector's interface: input 'det_in' [N, 3, 64, 64]; outputs 'a' [N, 5, 1], 'b' [N, 5, 4]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = {"wa": np.ones((3, 5), np.float32), "wb": np.ones((3, 20), np.float32),
             "sa": np.array([-1, 5, 1], np.int64), "sb": np.array([-1, 5, 4], np.int64)}
    nodes = [
        helper.make_node("GlobalAveragePool", ["det_in"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "wa"], ["ma"]), helper.make_node("Reshape", ["ma", "sa"], ["a"]),
        helper.make_node("MatMul", ["f", "wb"], ["mb"]), helper.make_node("Reshape", ["mb", "sb"], ["b"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_detector",
        [helper.make_tensor_value_info("det_in", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 5, 1]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 5, 4])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def test_fp16_graph_keeps_float32_io_and_matches(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from bfm_deploy.engine.fp16_onnx import convert_to_fp16

    source = tmp_path / "full.onnx"
    source.write_bytes(_tiny_onnx("embedding", 8))
    target = convert_to_fp16(source, tmp_path / "full.fp16.onnx")
    model = onnx.load(str(target))
    assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3, 112, 112)).astype(np.float32)
    ref = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    half = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert half.dtype == np.float32 and half.shape == ref.shape
    cos = np.sum(ref * half, 1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(half, axis=1)
    assert cos.min() >= 0.999
    assert not np.array_equal(ref, half)  # it really ran in float16


def test_fp16_conversion_refuses_unknown_operators_and_keeps_resize_scales_float32(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from bfm_deploy.engine.fp16_onnx import convert_to_fp16

    def model(node: Any, inits: list[Any], out_shape: list[int]) -> Path:
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
                                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)], inits)
        path = tmp_path / f"{node.op_type}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    topk = model(helper.make_node("TopK", ["input", "k"], ["out", "idx"], axis=3),
                 [helper.make_tensor("k", TensorProto.INT64, [1], [2])], [1, 3, 4, 2])
    with pytest.raises(BfmError, match="cannot convert operators TopK"):
        convert_to_fp16(topk, tmp_path / "out.onnx")
    resize = model(helper.make_node("Resize", ["input", "", "scales"], ["out"]),
                   [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])], [1, 3, 8, 8])
    converted = onnx.load(str(convert_to_fp16(resize, tmp_path / "resize16.onnx")))
    assert [i.data_type for i in converted.graph.initializer if i.name == "scales"] == [TensorProto.FLOAT]


def test_build_engines_writes_engines_and_manifest(tmp_path: Path, use_fake_trt: Any) -> None:
    fake = FakeTrt("10.16.1.11", fp16_flag=True)
    build = use_fake_trt(fake)
    bundle = _tiny_bundle(tmp_path)
    cache = tmp_path / "cache" / "timing.cache"
    options = BuildOptions(profile=BatchProfile(1, 16, 64), workspace_gb=1, timing_cache=cache)
    target = build.build_engines(bundle, options)
    assert target == bundle / "trt-10.16.1.11-sm90"
    manifest = EngineManifest.load(target / "engine_manifest.json")
    sources = read_sources(bundle)
    check_manifest(manifest, FACTS, {n: s.sha256 for n, s in sources.items()}, bundle)
    for network in NETWORKS:
        data = (target / f"{network}.engine").read_bytes()
        assert data.startswith(b"fp16-flag:")
        assert manifest.engines[network].sha256 == hashlib.sha256(data).hexdigest()
    assert manifest.workspace_bytes == 1 << 30 and manifest.tools["fp16"] == "builder flag"
    assert fake.profiles == [("input", (1, 3, 112, 112), (16, 3, 112, 112), (64, 3, 112, 112))] * 3
    assert cache.read_bytes() == b"ttt"  # reused across the three builds and saved after each
    assert not [p.name for p in bundle.iterdir() if p.name.startswith(".")]  # no temp leftovers

    with pytest.raises(BfmError, match="exists; pass --overwrite"):
        build.build_engines(bundle, options)
    build.build_engines(bundle, replace(options, overwrite=True))
    assert cache.read_bytes() == b"tttttt"


def test_build_engines_on_tensorrt_11_builds_from_fp16_graphs(tmp_path: Path, use_fake_trt: Any) -> None:
    pytest.importorskip("onnx")
    fake = FakeTrt("11.4.0.106", fp16_flag=False)
    build = use_fake_trt(fake)
    bundle = _tiny_bundle(tmp_path)
    target = build.build_engines(bundle, BuildOptions(timing_cache=tmp_path / "t.cache"))
    manifest = EngineManifest.load(target / "engine_manifest.json")
    assert manifest.tools["fp16"] == "fp16 graph"
    assert all(not Path(p).is_relative_to(bundle) for p in fake.parsed)  # converted copies, not the bundle's files
    for network in NETWORKS:
        assert (target / f"{network}.engine").read_bytes().startswith(b"no-flag:")
        assert manifest.engines[network].onnx_sha256 == read_sources(bundle)[network].sha256
    assert not any(Path(p).exists() for p in fake.parsed)  # scratch copies are cleaned up


def test_failed_build_leaves_no_engine_folder(tmp_path: Path, use_fake_trt: Any) -> None:
    fake = FakeTrt("10.16.1.11", fp16_flag=True)
    fake.reject_all = True  # type: ignore[attr-defined]  # the (fake) parser rejects every graph
    build = use_fake_trt(fake)
    bundle = _bundle(tmp_path)
    with pytest.raises(BfmError, match="TensorRT could not parse .*classifier.onnx: not an ONNX model"):
        build.build_engines(bundle, BuildOptions(timing_cache=tmp_path / "t.cache"))
    assert sorted(p.name for p in bundle.iterdir()) == ["classifier.onnx", "full.onnx", "manifest.json", "partial.onnx"]


# ---- the trt backend on a fake TensorRT runtime and a fake CUDA runtime ---------------------------------------


def _write_engines(bundle: Path, facts: RuntimeFacts, profile: BatchProfile) -> Path:
    folder = engine_dir(bundle, facts)
    folder.mkdir()
    sources = read_sources(bundle)
    entries = {}
    for network in NETWORKS:
        (folder / f"{network}.engine").write_bytes(network.encode())
        entries[network] = EngineEntry(f"{network}.engine", sources[network].sha256,
                                       hashlib.sha256(network.encode()).hexdigest(), "input", sources[network].output)
    manifest = build_manifest(facts, BuildOptions(profile=profile), entries, "now")
    (folder / "engine_manifest.json").write_text(manifest.to_json())
    return folder


@pytest.fixture()
def use_fake_trt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[FakeTrt], Any]]:
    with fake_trt_imports(monkeypatch) as use:
        yield use


@pytest.fixture()
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, FakeCuda, Executed]:
    return install_fake_gpu(monkeypatch)


def test_trt_backend_chunks_pads_and_matches(tmp_path: Path, fake_gpu: tuple[Any, FakeCuda, Executed]) -> None:
    trt_backend, cuda, executed = fake_gpu
    bundle = _bundle(tmp_path)
    _write_engines(bundle, FACTS, BatchProfile(4, 8, 16))
    x = np.random.default_rng(0).normal(size=(37, 3, 112, 112)).astype(np.float32)
    with trt_backend.TrtBackend(bundle) as backend:
        np.testing.assert_allclose(backend.infer("full", x), fake_embed(x, 8), rtol=1e-5)
        assert executed == [("full", 16), ("full", 16), ("full", 5)]
        executed.clear()
        small = backend.infer("classifier", x[:2])  # below the profile's min of 4: padded, then cut back
        assert small.shape == (2, 2) and executed == [("classifier", 4)]
        np.testing.assert_allclose(small, fake_embed(x[:2], 2), rtol=1e-5)
        cuda.log.clear()
        both = backend.infer_concurrent({"full": x[:20], "partial": x[20:25]})
        np.testing.assert_allclose(both["full"], fake_embed(x[:20], 8), rtol=1e-5)
        np.testing.assert_allclose(both["partial"], fake_embed(x[20:25], 8), rtol=1e-5)
        # both networks are queued on their own streams before the first wait
        assert [e.split()[0] for e in cuda.log[:4]] == ["exec", "exec", "sync", "sync"]
        with pytest.raises(BfmError, match=r"expected a batch of shape \[N, 3, 112, 112\]"):
            backend.infer("full", x[:, :, :100])
    assert cuda.memory == {}  # close() freed every pinned and device buffer
    with pytest.raises(BfmError, match="after close"):
        backend.infer("full", x)


@pytest.mark.parametrize("what", ["version", "gpu", "onnx", "missing", "corrupt"])
def test_trt_backend_refuses_mismatching_engines(
    tmp_path: Path, fake_gpu: tuple[Any, FakeCuda, Executed], what: str
) -> None:
    trt_backend, cuda, _ = fake_gpu
    bundle = _bundle(tmp_path)
    profile = BatchProfile(1, 8, 64)
    command = f"bfm-build-engine {bundle} --min-batch 1 --opt-batch 8 --max-batch 64 --overwrite"
    if what == "version":  # engines from an older TensorRT, filed under this version's folder name by hand
        folder = _write_engines(bundle, FACTS, profile)
        data = json.loads((folder / "engine_manifest.json").read_text())
        data["tensorrt_version"] = "10.13.3.9"
        (folder / "engine_manifest.json").write_text(json.dumps(data))
        expected = "TensorRT version: engines 10.13.3.9, running 10.16.1.11"
    elif what == "gpu":
        folder = _write_engines(bundle, FACTS, profile)
        data = json.loads((folder / "engine_manifest.json").read_text())
        data["gpu"]["name"] = "NVIDIA A100-SXM4-80GB"
        (folder / "engine_manifest.json").write_text(json.dumps(data))
        expected = "engines built on 'NVIDIA A100-SXM4-80GB'"
    elif what == "onnx":
        folder = _write_engines(bundle, FACTS, profile)
        data = json.loads((folder / "engine_manifest.json").read_text())
        data["engines"]["full"]["onnx_sha256"] = "f" * 64
        (folder / "engine_manifest.json").write_text(json.dumps(data))
        expected = "full.onnx sha256: engine built from ffffffffffff"
    elif what == "missing":
        _write_engines(bundle, RuntimeFacts("10.13.3.9", H100), profile)
        expected = "no TensorRT engines for TensorRT 10.16.1.11 on sm90"
    else:
        folder = _write_engines(bundle, FACTS, profile)
        (folder / "partial.engine").write_bytes(b"truncated")
        expected = "partial.engine is missing or does not match its sha256"
    with pytest.raises(BfmError) as info:
        trt_backend.TrtBackend(bundle)
    message = str(info.value)
    assert expected in message and message.endswith(command) and "\n" not in message
    assert cuda.memory == {}  # nothing left allocated by a refused load


def test_trt_backend_device_names() -> None:
    from bfm_deploy.backends.trt import device_index

    assert [device_index(d) for d in (0, 2, "cuda", "auto", "cuda:1")] == [0, 2, 0, 0, 1]
    for bad in ("cpu", -1, "cuda:x", True):
        with pytest.raises(BfmError, match="trt backend: device must be a CUDA device"):
            device_index(bad)  # type: ignore[arg-type]


def test_trt_backend_failed_run_waits_for_queued_work(
    tmp_path: Path, fake_gpu: tuple[Any, FakeCuda, Executed]
) -> None:
    trt_backend, cuda, executed = fake_gpu
    bundle = _bundle(tmp_path)
    _write_engines(bundle, FACTS, BatchProfile(1, 8, 16))
    x = np.zeros((4, 3, 112, 112), np.float32)
    with trt_backend.TrtBackend(bundle) as backend:
        backend._slots["partial"].context.execute_async_v3 = lambda handle: False
        cuda.log.clear()
        with pytest.raises(BfmError, match="execute_async_v3 failed"):
            backend.infer_concurrent({"full": x, "partial": x})
        assert cuda.log[0] == "exec full" and sum(e.startswith("sync") for e in cuda.log) == 3


# ---- the bundle's detector: its own engine, profile and multi-output buffers ---------------------------------


def _with_fake_detector(bundle: Path, size: int = 64) -> Path:
    """Give a test bundle a detector entry with the fake engine's tensor names."""
    data = _tiny_detector_onnx()
    (bundle / "detector.onnx").write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["detector"] = {
        "file": "detector.onnx", "architecture": "scrfd-500m", "decoding": "scrfd", "input": "det_in",
        "outputs": list(DETECTOR_OUTPUTS), "input_size": [size, size], "channel_order": "RGB",
        "normalisation": {"mean": 127.5, "std": 128.0}, "score_threshold": 0.5, "nms_threshold": 0.4,
        "params": 1, "sha256": hashlib.sha256(data).hexdigest(), "licence": "test", "source": "test",
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_build_engines_builds_the_detector_with_its_own_profile(tmp_path: Path, use_fake_trt: Any) -> None:
    fake = FakeTrt("10.16.1.11", fp16_flag=True)
    build = use_fake_trt(fake)
    bundle = _tiny_bundle(tmp_path)
    demo_detector = Path(__file__).resolve().parents[2] / "engines" / "demo" / "detector.onnx"
    from bfm_train.export.update import UpdateOptions, update_bundle

    update_bundle(bundle, UpdateOptions(detector=str(demo_detector)), log=lambda _: None)
    target = build.build_engines(bundle, BuildOptions(profile=BatchProfile(2, 16, 64), timing_cache=tmp_path / "t"))
    manifest = EngineManifest.load(target / "engine_manifest.json")
    entry = manifest.engines["detector"]
    assert entry.max_batch == 32 and len(entry.outputs) == 9 and entry.input == "input.1"
    assert fake.profiles[-1] == ("input.1", (2, 3, 320, 320), (16, 3, 320, 320), (32, 3, 320, 320))
    sources = read_sources(bundle)
    check_manifest(manifest, FACTS, {n: s.sha256 for n, s in sources.items()}, bundle)
    # engines built before the bundle had a detector no longer match it
    stale = replace(manifest, engines={n: e for n, e in manifest.engines.items() if n != "detector"})
    with pytest.raises(BfmError, match="detector: no engine in the manifest"):
        check_manifest(stale, FACTS, {n: s.sha256 for n, s in sources.items()}, bundle)


def test_trt_backend_runs_the_detector_in_chunks(tmp_path: Path, fake_gpu: tuple[Any, FakeCuda, Executed]) -> None:
    trt_backend, cuda, executed = fake_gpu
    bundle = _with_fake_detector(_bundle(tmp_path))
    folder = _write_engines(bundle, FACTS, BatchProfile(4, 8, 16))
    manifest = json.loads((folder / "engine_manifest.json").read_text())
    (folder / "detector.engine").write_bytes(b"detector")
    manifest["engines"]["detector"] = {
        "file": "detector.engine", "onnx_sha256": read_sources(bundle)["detector"].sha256,
        "sha256": hashlib.sha256(b"detector").hexdigest(), "input": "det_in", "output": "a",
        "outputs": list(DETECTOR_OUTPUTS), "max_batch": 8,
    }
    (folder / "engine_manifest.json").write_text(json.dumps(manifest))
    x = np.random.default_rng(1).normal(size=(11, 3, 64, 64)).astype(np.float32)
    with trt_backend.TrtBackend(bundle) as backend:
        a, b = backend.detect(x)
        assert executed == [("detector", 8), ("detector", 4)]  # chunks of max_batch; 3 rows padded to min 4
        assert a.shape == (11, 5, 1) and b.shape == (11, 5, 4)
        np.testing.assert_allclose(a[:, 0, 0], x.reshape(11, -1).mean(1), rtol=1e-5)
        np.testing.assert_allclose(b[:, 4, 3], x.reshape(11, -1).mean(1), rtol=1e-5)
        with pytest.raises(BfmError, match=r"detector batch must be \[N, 3, 64, 64\]"):
            backend.detect(x[:, :, :32])
    assert cuda.memory == {}


def test_the_detector_converts_to_fp16_and_finds_the_same_landmarks(tmp_path: Path, data_dir: Path) -> None:
    """TensorRT >= 11 builds the detector from an FP16 copy: its Resize keeps float32 scales, and onnxruntime
    on that copy finds the same faces within a fraction of a pixel."""
    pytest.importorskip("onnx")
    from bfm_deploy.detect import NetworkDetector, OnnxRunner, scrfd_spec
    from bfm_deploy.engine.fp16_onnx import convert_to_fp16
    from bfm_deploy.images import load_image

    source = ROOT / "engines" / "demo" / "detector.onnx"
    half = convert_to_fp16(source, tmp_path / "detector16.onnx")
    detectors = [NetworkDetector(spec, OnnxRunner(spec.file, spec.input_name, spec.output_names))
                 for spec in (scrfd_spec(source), scrfd_spec(half))]
    photos = sorted((data_dir / "lfw" / "raw-fold1").glob("*/*.jpg"))[:8] + sorted((data_dir / "mfr2").glob("*/*.png"))[:8]
    images = [load_image(p) for p in photos]
    full, fp16 = (d.detect_batch(images) for d in detectors)
    for a, b in zip(full, fp16):
        assert len(a) == len(b) >= 1
        assert np.abs(a[0].landmarks - b[0].landmarks).max() < 0.5
