"""bfm-bench: the ONNX MAC counter, the statistics helpers, --flops and a quick --latency run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bfm_deploy.bench.onnx_macs import count_onnx_macs
from bfm_deploy.bench.stats import LatencySummary, median, median_of_runs, percentile, summarise_run
from bfm_deploy.errors import BfmError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _graph(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weight(name: str, shape: tuple[int, ...]):
    return numpy_helper.from_array(np.zeros(shape, dtype=np.float32), name)


# ---- ONNX MAC counter on hand-made graphs -------------------------------------------------------------


def test_conv_macs_by_hand():
    # 3 -> 4 channels, 3x3 kernel, pad 1: output 4x8x8, each output value is 3*3*3 = 27 MACs.
    model = _graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_weight("w", (4, 3, 3, 3))],
    )
    count = count_onnx_macs(model, batch=1)
    assert count.macs == 4 * 8 * 8 * 27 == 6912
    assert count_onnx_macs(model, batch=5).macs == 5 * 6912  # linear in the batch
    assert count.counted_nodes == {"Conv": 1}
    assert count.params == 4 * 3 * 3 * 3


def test_grouped_strided_conv_macs_by_hand():
    # groups=2, 4 -> 6 channels, 3x3 stride 2 without padding: 8x8 -> 3x3; fan-in (4/2)*3*3 = 18.
    model = _graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2], group=2)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_weight("w", (6, 2, 3, 3))],
    )
    assert count_onnx_macs(model).macs == 6 * 3 * 3 * 18 == 972


def test_gemm_matmul_and_uncounted_ops_by_hand():
    # Gemm [N,10] x [5,10]^T -> [N,5]: 50 MACs per row; Relu is listed, not counted;
    # MatMul [N,5] x [5,7] -> [N,7]: 35 MACs per row.
    model = _graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "m"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_weight("w", (5, 10)), _weight("b", (5,)), _weight("m", (5, 7))],
    )
    count = count_onnx_macs(model, batch=3)
    assert count.macs_by_op == {"Gemm": 3 * 50, "MatMul": 3 * 35}
    assert count.macs == 255
    assert count.uncounted == {"Relu": 1}


def test_onnx_counter_rejects_missing_file(tmp_path):
    with pytest.raises(BfmError, match="not found"):
        count_onnx_macs(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(BfmError):
        count_onnx_macs(bad)


# ---- statistics --------------------------------------------------------------------------------------


def test_percentile_matches_numpy_and_hand_values():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0
    assert percentile(values, 90) == pytest.approx(4.6)  # 4 + 0.6 * (5 - 4)
    rng = np.random.default_rng(1)
    sample = list(rng.exponential(size=37))
    for q in (1, 50, 90, 99):
        assert percentile(sample, q) == pytest.approx(float(np.percentile(sample, q)))
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5
    with pytest.raises(BfmError):
        percentile([], 50)
    with pytest.raises(BfmError):
        percentile([1.0], 101)


def test_summaries_take_the_median_of_runs():
    run = summarise_run([0.010, 0.020, 0.030, 0.040], faces_per_call=8)
    assert run.p50_ms == pytest.approx(25.0)
    assert run.faces_per_s == pytest.approx(32 / 0.1)
    runs = [LatencySummary(1, 2, 3, 100), LatencySummary(10, 20, 30, 5), LatencySummary(2, 3, 4, 90)]
    assert median_of_runs(runs) == LatencySummary(2, 3, 4, 90)
    with pytest.raises(BfmError):
        median_of_runs([])


def test_stage_clock_charges_each_stage_its_own_time(monkeypatch):
    from bfm_deploy.bench import stages

    # detect starts at 0; align runs 1-3 and 4-6; detect ends at 10
    ticks = iter([0.0, 1.0, 3.0, 4.0, 6.0, 10.0])
    monkeypatch.setattr(stages.time, "perf_counter", lambda: next(ticks))
    clock = stages.StageClock()
    with clock.stage("detect"):
        with clock.stage("align"):
            pass
        with clock.stage("align"):
            pass
    assert clock.seconds["align"] == pytest.approx(4.0)
    assert clock.seconds["detect"] == pytest.approx(6.0)  # 0-1, 3-4, 6-10: the nested time is not double-counted
    assert clock.calls == {"detect": 1, "align": 2}


def test_patch_everywhere_replaces_and_restores():
    from bfm_deploy import images, verifier
    from bfm_deploy.bench.stages import patch_everywhere

    original = images.load_image
    sentinel = object()
    with patch_everywhere(original, sentinel) as count:
        assert count >= 2  # the defining module and the verifier's imported name
        assert images.load_image is sentinel and verifier.load_image is sentinel
    assert images.load_image is original and verifier.load_image is original


# ---- command line ------------------------------------------------------------------------------------


def _tiny_network(path: Path, outputs: int, output_name: str, seed: int) -> int:
    """A 112x112 -> ``outputs`` ONNX graph small enough to time in milliseconds; returns its MACs."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "b"], [output_name], transB=1),
    ]
    weights = [
        numpy_helper.from_array(rng.normal(size=(8, 3, 8, 8)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=(outputs, 8)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.zeros(outputs, np.float32), "b"),
    ]
    model = _graph(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", outputs])],
        weights,
    )
    model.ir_version = 8  # readable by every onnxruntime the project supports
    onnx.save(model, str(path))
    return count_onnx_macs(model).macs


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """A valid bundle of tiny graphs (no torch): the benchmark's plumbing, not the networks, is under test."""
    from bfm_deploy.alignment import ARCFACE_TEMPLATE
    from bfm_deploy.bundle import sha256_file

    root = tmp_path_factory.mktemp("bench") / "tiny"
    root.mkdir()
    models = {}
    for seed, (network, outputs, output) in enumerate(
        [("classifier", 2, "logits"), ("full", 512, "embedding"), ("partial", 512, "embedding")]
    ):
        path = root / f"{network}.onnx"
        macs = _tiny_network(path, outputs, output, seed)
        models[network] = {"file": path.name, "architecture": "tiny", "params": 1, "macs": macs,
                           "sha256": sha256_file(path), "input": "input", "output": output}
    manifest = {
        "format": "bfm-bundle", "format_version": 1, "name": "tiny", "created": "2026-11-28T00:00:00Z",
        "input": {"size": [112, 112], "layout": "NCHW", "channel_order": "RGB", "dtype": "float32",
                  "normalisation": {"mean": 127.5, "std": 127.5},
                  "alignment": {"method": "similarity-5pt", "template": ARCFACE_TEMPLATE.tolist()}},
        "embedding_size": 512, "metric": "cosine",
        "thresholds": {"full": {"value": 0.3, "calibration": "test"}, "partial": {"value": 0.3, "calibration": "test"}},
        "models": models, "source": {"checkpoint": "none"}, "tools": {"bfm": "test"}, "licence": "test",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _run(args: list[str]):
    from click.testing import CliRunner

    from bfm_deploy.bench.cli import main

    return CliRunner().invoke(main, args)


def test_quick_latency_writes_json_and_png(tiny_bundle, data_dir, tmp_path):
    out_json, out_png = tmp_path / "lat.json", tmp_path / "lat.png"
    result = _run(["--latency", "--quick", "--bundle", str(tiny_bundle), "--batches", "1,4", "--pair-count", "4",
                   "--raw-pair-count", "1", "--runs", "2", "--json-out", str(out_json), "--plot", str(out_png)])
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    assert isinstance(report["routing_overhead"], float) and report["routing_overhead"] > 0
    assert isinstance(report["compute_efficiency"], float) and report["compute_efficiency"] > 0
    assert {(p["network"], p["batch"]) for p in report["sweep"]} == {
        (n, b) for n in ("classifier", "full", "partial") for b in (1, 4)
    }
    for point in report["sweep"]:
        assert 0 < point["p50_ms"] <= point["p90_ms"] <= point["p99_ms"] and point["faces_per_s"] > 0
    machine = report["machine"]
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1 and machine["onnxruntime"]
    assert report["efficiency"]["matmul_gflops"] > 0
    aligned, raw = report["pipeline"]["aligned"], report["pipeline"]["raw"]
    for stage in ("decode", "classify", "extract", "compare"):
        assert aligned["ms_per_pair"][stage] > 0, stage
    assert aligned["ms_per_pair"]["detect"] == 0  # aligned inputs skip the detector
    assert raw["ms_per_pair"]["detect"] > 0 and raw["ms_per_pair"]["decode_align"] > 0
    comparison = report["pipeline"]["raw_comparison"]
    assert comparison["photos"] == 2 and set(comparison["faces_per_s"]) == {"runtime", "no_fallback", "mtcnn", "reference"}
    assert comparison["runtime_over_mtcnn"] > 0 and comparison["runtime_over_reference"] > 0
    assert comparison["runtime_over_no_fallback"] > 0 and comparison["fallback_detectors_opened"] == []
    assert sum(aligned["share"].values()) == pytest.approx(1.0, abs=0.05)
    prevalence = report["pipeline"]["prevalence"]
    assert [row["masked_pairs"] for row in prevalence] == [0.0, 0.25, 0.5, 1.0]
    assert all(row["routes"]["pairs"] == 4 and row["ratio"] > 0 for row in prevalence)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--flops, --latency, --serve or --gallery-scale"),
        (["--flops", "--latency"], "--flops, --latency, --serve or --gallery-scale"),
        (["--latency", "--backend", "tensorflow"], "Invalid value for '--backend'"),
        (["--latency", "--batches", "1,x"], "--batches"),
        (["--latency", "--batches", "0,4"], "--batches"),
        (["--latency", "--bundle", "/nonexistent/bundle"], "not found"),
        (["--flops", "--plot", "x.png"], "--plot applies to --latency only"),
        (["--no-such-option"], "No such option"),
    ],
)
def test_bad_options_exit_2_with_one_line(args, message):
    result = _run(args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_flops_json_schema_and_counts_agree(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "flops.json"
    result = _run(["--flops", "--backbone", "mbf", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["backbone"] == "mbf"
    assert set(report["models"]) == {"classifier", "full", "partial"}
    for entry in report["models"].values():
        assert {"params", "macs", "flops", "macs_onnx"} <= set(entry)
        assert entry["flops"] == 2 * entry["macs"]
        assert entry["macs_onnx"] == entry["macs"]  # two independent counts agree exactly
    classifier = report["models"]["classifier"]
    # Table I by hand: conv 16*28*28*(3*4*4) + fc1 12544*512 + fc2 512*2
    assert classifier["macs"] == 16 * 28 * 28 * 48 + 12544 * 512 + 512 * 2 == 7_025_664
    assert classifier["params"] == 6_425_906
    assert report["models"]["full"] == report["models"]["partial"]
    assert report["paper"]["classifier_flops"] == 70.7e6
    assert report["paper"]["classifier"]["claimed_over_macs"] == pytest.approx(10.06, abs=0.01)
    assert "tenth" in report["paper"]["classifier"]["finding"]


def test_steady_rate_leaves_out_ramp_up_and_drain() -> None:
    """Responses counted after every client's first round trip and up to the last hand-out."""
    from bfm_deploy.bench.serve_load import _steady_rate

    # 4 clients: nothing comes back for 1 s, then a response every 0.1 s; the last request goes out at 3.0 s.
    finished = [1.0 + 0.1 * i for i in range(30)]
    assert _steady_rate(finished, clients=4, until=3.0) == pytest.approx(10.0)  # (1.3, 3.0]: 17 in 1.7 s
    assert _steady_rate(finished, clients=4, until=1.3) is None  # no response inside the window
    assert _steady_rate(finished[:4], clients=4, until=9.0) is None  # fewer responses than clients


def test_serve_load_runs_both_servers_and_the_offline_reference(data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    demo = Path(__file__).resolve().parents[2] / "engines" / "demo"
    out = tmp_path / "serve.json"
    result = _run(["--serve", "--bundle", str(demo), "--data-dir", str(data_dir), "--concurrency", "1,3",
                   "--requests", "9", "--json-out", str(out), "--plot", str(tmp_path / "serve.png"), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["servers"]) == {"batched", "batch-1"} and report["offline_verify_many_pairs_per_s"] > 0
    for levels in report["servers"].values():
        assert [row["clients"] for row in levels] == [1, 3]
        # at least 8 requests a client, so that the steady window spans many batches: 9 at 1 client, 24 at 3
        assert [row["completed"] for row in levels] == [9, 24]
        assert all(row["errors"] == 0 and row["p99_ms"] >= row["p50_ms"] > 0 for row in levels)
        assert all(row["pairs_per_s"] > 0 and row["overall_pairs_per_s"] > 0 for row in levels)
    assert set(report["ratios"]) == {f"batched_vs_{ref}_at_{c}" for ref in ("offline", "batch1") for c in (1, 3)}
    assert (tmp_path / "serve.png").read_bytes().startswith(b"\x89PNG")
    assert _run(["--serve", "--concurrency", "1,x"]).exit_code == 2
    assert report["offline_backend"] == "ort" and report["server_backends"] == {"batched": "ort", "batch-1": "ort"}


def test_serve_load_measures_the_openvino_backend(data_dir: Path, tmp_path: Path) -> None:
    """``--serve --backend openvino``: both servers and the offline reference run OpenVINO, and say which."""
    pytest.importorskip("fastapi")
    pytest.importorskip("openvino")
    demo = Path(__file__).resolve().parents[2] / "engines" / "demo"
    out = tmp_path / "serve.json"
    result = _run(["--serve", "--backend", "openvino-f32", "--bundle", str(demo), "--data-dir", str(data_dir),
                   "--concurrency", "2", "--requests", "16", "--json-out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["offline_backend"] == "openvino-f32"
    assert report["server_backends"] == {"batched": "openvino-f32", "batch-1": "openvino-f32"}
    assert all(row["completed"] == 16 and row["errors"] == 0 for levels in report["servers"].values() for row in levels)


def test_plots_are_written_as_palette_pngs(tmp_path: Path) -> None:
    """Committed result plots are palette PNGs (a third of RGBA's size: the tree travels to the GPU machine)."""
    from PIL import Image

    from bfm_deploy.plotting import pyplot, save_png

    fig, axis = pyplot().subplots(figsize=(4, 3))
    axis.plot([1, 2, 3], [3, 1, 2], label="a line")
    axis.legend()
    save_png(fig, tmp_path / "plot.png")
    with Image.open(tmp_path / "plot.png") as image:
        assert image.mode == "P" and image.size == (440, 330)  # 110 dpi
        assert len(image.getcolors(256) or []) > 4  # the line and text survive, not one flat colour
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left
