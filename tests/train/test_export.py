"""bfm-export: ONNX graphs, parity with torch, manifest, atomic writes, thresholds and calibration."""

from __future__ import annotations

import json
from dataclasses import replace
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from click.testing import CliRunner  # noqa: E402

from bfm_deploy.bundle import Bundle, sha256_file  # noqa: E402
from bfm_deploy.errors import BfmError  # noqa: E402
from bfm_deploy.manifest import Manifest, Threshold  # noqa: E402
from bfm_deploy.tensor import preprocess  # noqa: E402
from bfm_train.export import ExportOptions, export_source, load_source, parse_thresholds  # noqa: E402
from bfm_train.export import exporter as exporter_module  # noqa: E402
from bfm_train.export import network as network_module  # noqa: E402
from bfm_deploy.metrics import best_threshold  # noqa: E402
from bfm_train.export.calibrate import calibrate, read_labelled_pairs  # noqa: E402
from bfm_train.export.cli import main as export_cli  # noqa: E402
from bfm_models import model_info  # noqa: E402
from bfm_models.pretrained import w600k_mbf_path  # noqa: E402
from bfm_train.system import BFMSystem  # noqa: E402

QUIET = {"log": lambda _m: None}


def test_manifest_describes_the_bundle(mbf_bundle: Path) -> None:
    manifest = json.loads((mbf_bundle / "manifest.json").read_text())
    assert manifest["format"] == "bfm-bundle" and manifest["format_version"] == 1
    assert manifest["name"] == "mbf"
    assert manifest["input"]["size"] == [112, 112] and manifest["input"]["channel_order"] == "RGB"
    assert manifest["input"]["normalisation"] == {"mean": 127.5, "std": 127.5}
    assert len(manifest["input"]["alignment"]["template"]) == 5
    assert manifest["embedding_size"] == 512 and manifest["metric"] == "cosine"
    assert manifest["thresholds"]["full"]["value"] == 0.30
    assert manifest["thresholds"]["partial"]["value"] == 0.25
    assert "given" in manifest["thresholds"]["full"]["calibration"]
    for network, arch, output in (("classifier", "classifier", "logits"), ("full", "mbf", "embedding"),
                                  ("partial", "mbf", "embedding")):
        entry = manifest["models"][network]
        info = model_info(arch)
        assert entry["architecture"] == arch and entry["output"] == output and entry["input"] == "input"
        assert (entry["params"], entry["macs"]) == (info.params, info.macs)
        assert entry["sha256"] == sha256_file(mbf_bundle / entry["file"])
        assert entry["parity"]["min_cosine"] >= 0.9999
    assert manifest["source"]["checkpoint"] == "pretrained:w600k_mbf"
    assert manifest["source"]["sha256"] == sha256_file(w600k_mbf_path())
    assert manifest["tools"]["opset"] == 17 and manifest["tools"]["torch"] == torch.__version__
    assert "NON-COMMERCIAL" in manifest["licence"]
    assert manifest["weights"]["sha256"] == sha256_file(mbf_bundle / "weights.safetensors")


def test_onnx_graphs_are_single_file_opset17_dynamic_batch(mbf_bundle: Path) -> None:
    for network in ("classifier", "full", "partial"):
        model = onnx.load(str(mbf_bundle / f"{network}.onnx"), load_external_data=False)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        (graph_input,) = model.graph.input
        assert graph_input.name == "input"
        dims = graph_input.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 112, 112]
        assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_exported_graphs_match_torch_on_real_faces(mbf_bundle: Path, mbf_source, data_dir: Path) -> None:
    """Independent of the exporter's own check: odd batch size, other faces."""
    import onnxruntime as ort

    paths = sorted((data_dir / "lfw" / "aligned112" / "George_W_Bush").glob("*.jpg"))[:5]
    batch = preprocess([cv2.imread(str(p)) for p in paths])
    for network in ("classifier", "full", "partial"):
        session = ort.InferenceSession(str(mbf_bundle / f"{network}.onnx"), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"input": batch})
        with torch.inference_mode():
            want = mbf_source.networks[network](torch.from_numpy(batch)).numpy()
        cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert got.shape == want.shape and cosine.min() >= 0.9999, network


def test_parity_falls_back_to_random_input_with_a_warning(tmp_path: Path) -> None:
    from bfm_train.export.parity import parity_batch

    with pytest.warns(UserWarning, match="random input"):
        batch = parity_batch(tmp_path, 3)
    assert batch.tensor.shape == (3, 3, 112, 112) and "random" in batch.description
    assert -1.0 <= batch.tensor.min() and batch.tensor.max() <= 1.0


def test_existing_bundle_needs_overwrite(mbf_bundle: Path, mbf_source) -> None:
    with pytest.raises(BfmError, match="--overwrite"):
        export_source(mbf_source, ExportOptions(out=mbf_bundle, thresholds=0.3), **QUIET)


def _crash_on(network: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the export die (as a crash would, not a BfmError) after some graphs were already written."""
    real = network_module.check_parity

    def crashing(module, path, batch):  # noqa: ANN001, ANN202
        if path.name == f"{network}.onnx":
            raise RuntimeError("simulated crash mid-export")
        return real(module, path, batch)

    monkeypatch.setattr(network_module, "check_parity", crashing)


def test_interrupted_export_leaves_no_bundle(tmp_path: Path, mbf_source, monkeypatch: pytest.MonkeyPatch) -> None:
    _crash_on("classifier", monkeypatch)  # classifier.onnx is written by then
    out = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="simulated"):
        export_source(mbf_source, ExportOptions(out=out, thresholds=0.3), **QUIET)
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor a temporary folder


def test_interrupted_overwrite_keeps_previous_bundle(tmp_path: Path, mbf_bundle: Path, mbf_source,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    for file in mbf_bundle.iterdir():  # a cheap copy: links to the big files, a real manifest
        (out / file.name).symlink_to(file) if file.suffix != ".json" else shutil.copy(file, out / file.name)
    before = {p.name: p.read_bytes() if p.suffix == ".json" else p.resolve() for p in out.iterdir()}
    _crash_on("full", monkeypatch)
    with pytest.raises(RuntimeError, match="simulated"):
        export_source(mbf_source, ExportOptions(out=out, thresholds=0.5, overwrite=True), **QUIET)
    assert {p.name: p.read_bytes() if p.suffix == ".json" else p.resolve() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    Bundle.load(out)


def test_parity_failure_refuses_the_export(tmp_path: Path, mbf_source, monkeypatch: pytest.MonkeyPatch) -> None:
    from bfm_train.export.parity import ParityResult

    monkeypatch.setattr(network_module, "check_parity", lambda *a: ParityResult(0.5, 0.99, 2))
    with pytest.raises(BfmError, match="disagrees with the torch model"):
        export_source(mbf_source, ExportOptions(out=tmp_path / "b", thresholds=0.3), **QUIET)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("full=0.35,partial=0.3", {"full": 0.35, "partial": 0.3}), ("0.4", {"full": 0.4, "partial": 0.4}),
     ({"partial": 0.1, "full": -0.2}, {"full": -0.2, "partial": 0.1})],
)
def test_parse_thresholds(text: object, expected: dict[str, float]) -> None:
    assert parse_thresholds(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["full=0.3", "full=0.3,partial=x", "full=2,partial=0.1", "full=.3,side=.2", "a"])
def test_bad_thresholds(text: str) -> None:
    with pytest.raises(BfmError):
        parse_thresholds(text)


def test_options_refuse_contradictions(tmp_path: Path) -> None:
    with pytest.raises(BfmError, match="not both"):
        ExportOptions(thresholds=0.3, calibrate=tmp_path / "pairs.txt")
    with pytest.raises(BfmError, match="opset"):
        ExportOptions(opset=13)
    with pytest.raises(BfmError, match="plain folder name"):
        ExportOptions(name="../x")


def test_best_threshold_maximises_accuracy() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.45, 0.4, 0.2, 0.1])
    same = np.array([1, 1, 1, 0, 1, 0, 0], bool)
    value = best_threshold(scores, same)
    assert ((scores >= value) == same).mean() == pytest.approx(6 / 7)
    separable = best_threshold(np.array([0.9, 0.6, 0.3, 0.1]), np.array([1, 1, 0, 0], bool))
    assert separable == pytest.approx(0.45)


def test_calibration_on_lfw_pairs(tmp_path: Path, mbf_source, data_dir: Path) -> None:
    root = data_dir / "lfw" / "aligned112"
    lfw = read_labelled_pairs(data_dir / "lfw" / "pairs.txt")
    chosen = lfw[:10] + lfw[300:310]  # fold 1: 10 same, 10 different
    lines = [f"img/{p.left.relative_to(root)}\timg/{p.right.relative_to(root)}\t{int(p.same)}" for p in chosen]
    pairs_file = tmp_path / "pairs.tsv"
    (tmp_path / "img").symlink_to(root)  # paths in the file are relative to the file's folder
    pairs_file.write_text("\n".join(lines) + "\n")
    result = calibrate(pairs_file, mbf_source.networks)
    # Real faces are all "unmasked" for the brightness classifier: full calibrates on its own 20 pairs,
    # partial has none routed to it and falls back to all pairs, saying so.
    assert result["full"].pairs == 20 and "routes to full" in result["full"].description
    assert "only 0 routed to partial" in result["partial"].description
    assert result["full"].accuracy >= 0.95
    assert 0.0 < result["full"].value < 0.6


def test_calibrated_thresholds_go_into_the_manifest(mbf_source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bfm_train.export.calibrate import Calibration

    fake = {"full": Calibration(0.3123456789, 0.99, 20, "on full pairs"),
            "partial": Calibration(0.2, 0.9, 20, "on partial pairs")}
    routed_at: list[float] = []
    monkeypatch.setattr(exporter_module, "calibrate", lambda path, networks, mask: routed_at.append(mask) or fake)
    thresholds = exporter_module._thresholds(mbf_source, ExportOptions(calibrate=tmp_path / "p.txt"), lambda _m: None,
                                             0.297)
    assert thresholds == {"full": Threshold(0.312346, "on full pairs"), "partial": Threshold(0.2, "on partial pairs")}
    assert routed_at == [0.297]  # pairs are routed at the mask threshold the bundle will have


def test_update_calibrates_route_thresholds_on_the_bundles_own_routing(tmp_path: Path, mbf_bundle: Path,
                                                                       data_dir: Path) -> None:
    """bfm-export --update BUNDLE --calibrate PAIRS: the bundle's graphs (rebuilt as torch modules) route each
    pair by its classifier; darkened pairs (masked for the test classifier) calibrate the partial route on their
    own, the bright ones the full route, and nothing else in the bundle changes."""
    import shutil

    from bfm_train.export.update import UpdateOptions, update_bundle

    from bfm_deploy.bundle import Bundle
    from tests.conftest import DARKEN

    lfw = read_labelled_pairs(data_dir / "lfw" / "pairs.txt")
    chosen = lfw[:10] + lfw[300:310]  # fold 1 (training identities): 10 same, 10 different
    (tmp_path / "dark").mkdir()
    lines = []
    for p in chosen:
        lines.append(f"{p.left}\t{p.right}\t{int(p.same)}")
        dark = []
        for image in (p.left, p.right):
            target = tmp_path / "dark" / f"{image.stem}.png"
            cv2.imwrite(str(target), (cv2.imread(str(image)).astype(np.float32) * DARKEN).astype(np.uint8))
            dark.append(target)
        lines.append(f"{dark[0]}\t{dark[1]}\t{int(p.same)}")
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("\n".join(lines) + "\n")
    copy = tmp_path / "bundle"
    shutil.copytree(mbf_bundle, copy)
    update_bundle(copy, UpdateOptions(calibrate=pairs_file), log=lambda _m: None)
    before, after = Bundle.load(mbf_bundle), Bundle.load(copy)
    for route in ("full", "partial"):
        assert f"the 20 pairs the classifier routes to {route}" in after.manifest.thresholds[route].calibration
        assert 0.0 < after.thresholds[route].value < 1.0
    assert after.thresholds != before.thresholds
    assert {n: m.sha256 for n, m in after.models.items()} == {n: m.sha256 for n, m in before.models.items()}


def test_update_writes_the_manifest_as_the_schema_reads_it(tmp_path: Path, mbf_bundle: Path, data_dir: Path) -> None:
    """--update writes manifest.json through Manifest: read back and written again, it is the same text. Here a
    mask threshold joins a bundle that has torch weights, so its key must come before theirs (the schema's order),
    and the detector entry changes only its chain."""
    from bfm_train.export.update import UpdateOptions, update_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(mbf_bundle, copy)
    faces = sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[:6]
    calibration = tmp_path / "calibration.txt"  # labels need not be true: any faces calibrate some threshold
    calibration.write_text("".join(f"{face}\t{i % 2}\n" for i, face in enumerate(faces)))
    update_bundle(copy, UpdateOptions(mask_calibration=calibration, detector_fallback="pad:0.25"), **QUIET)
    text = (copy / "manifest.json").read_text()
    manifest = Manifest.from_dict(json.loads(text), "manifest.json", copy)
    assert manifest.to_json() == text
    assert isinstance(manifest.mask_threshold, Threshold) and "calibration.txt" in manifest.mask_threshold.calibration
    assert manifest.weights is not None and manifest.weights.sha256 == sha256_file(copy / "weights.safetensors")
    before = Bundle.load(mbf_bundle).manifest
    assert manifest.detector is not None and before.detector is not None
    assert [str(step) for step in manifest.detector.fallback] == ["pad:0.25"]
    assert replace(manifest.detector, fallback=before.detector.fallback, file=before.detector.file) == before.detector


def test_checkpoint_source_and_baseline(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    system = BFMSystem.build("mbf")
    full_only = {f"full.{k}": v.contiguous() for k, v in system.full.state_dict().items()}
    path = tmp_path / "baseline.safetensors"
    save_file(full_only, str(path), metadata={"format": "bfm-checkpoint/1", "backbone": "mbf", "recipe": "baseline",
                                              "config": json.dumps({"pretrained": "w600k_mbf"}), "epoch": "3"})
    with pytest.raises(BfmError, match="--classifier random"):
        load_source(path, ExportOptions(thresholds=0.3))
    source = load_source(path, ExportOptions(thresholds=0.3, classifier="random"))
    assert source.default_name == "baseline"
    assert source.source["sha256"] == sha256_file(path) and source.source["recipe"] == "baseline"
    assert "copy of full" in source.notes["partial"]
    assert "NON-COMMERCIAL" in source.licence  # the config says the backbone started from w600k_mbf
    x = torch.zeros(1, 3, 112, 112)
    with torch.inference_mode():
        assert torch.equal(source.networks["partial"](x), source.networks["full"](x))
    # a run directory means its latest checkpoint, and names the bundle after the run
    run = tmp_path / "my_run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(path, run / "checkpoints" / "step-00000002.safetensors")
    (run / "checkpoints" / "step-00000010.safetensors").write_bytes(path.read_bytes())
    (run / "checkpoints" / ".step-00000011.safetensors.123.abc.tmp").write_bytes(b"half")
    from_run = load_source(run, ExportOptions(thresholds=0.3, classifier="random"))
    assert from_run.default_name == "my_run" and from_run.source["checkpoint"] == "step-00000010.safetensors"
    with pytest.raises(BfmError, match="holds no checkpoints"):
        load_source(run / "checkpoints", ExportOptions(thresholds=0.3))  # a folder, but not a run directory


def test_cli_flags_build_the_same_options_as_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One option grammar: the CLI only turns flags into ExportOptions (the export itself is the fixture's)."""
    from bfm_train.export import cli

    seen = []
    monkeypatch.setattr(cli, "export_bundle", lambda checkpoint, options: seen.append((checkpoint, options)))
    args = ["--from-pretrained", "w600k_mbf", "--classifier", "random", "--seed", "3", "--out", str(tmp_path / "demo"),
            "--thresholds", "full=0.31,partial=0.27", "--no-torch-weights", "--opset", "18", "--overwrite"]
    result = CliRunner().invoke(export_cli, args)
    assert result.exit_code == 0, result.output
    expected = ExportOptions(from_pretrained="w600k_mbf", classifier="random", seed=3, out=tmp_path / "demo",
                             thresholds={"full": 0.31, "partial": 0.27}, torch_weights=False, opset=18,
                             overwrite=True)
    assert seen == [(None, expected)]
    seen.clear()
    assert CliRunner().invoke(export_cli, ["run.safetensors", "--name", "demo", "--calibrate", "p.txt"]).exit_code == 0
    assert seen == [(Path("run.safetensors"), ExportOptions(name="demo", calibrate=Path("p.txt")))]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--from-pretrained", "w600k_mbf", "--classifier", "random"], "no thresholds"),
     (["x.safetensors", "--from-pretrained", "w600k_mbf"], "exactly one"),
     (["missing.safetensors", "--thresholds", "0.3"], "checkpoint not found"),
     (["--from-pretrained", "w600k_mbf", "--thresholds", "full=0.3"], "missing: partial")],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(export_cli, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_classifier_taken_from_a_bundle(mbf_bundle: Path) -> None:
    """--classifier BUNDLE: the bundle's classifier, rebuilt from its ONNX, classifies as the bundle does."""
    import onnxruntime as ort

    from bfm_train.export import ExportOptions, load_source

    source = load_source(None, ExportOptions(from_pretrained="w600k_mbf", classifier=str(mbf_bundle)))
    assert source.source["classifier"].startswith("from bundle mbf (classifier.onnx sha256 ")
    probe = np.random.default_rng(3).uniform(-1, 1, (6, 3, 112, 112)).astype(np.float32)
    session = ort.InferenceSession(str(mbf_bundle / "classifier.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: probe})[0]
    with torch.no_grad():
        got = source.networks["classifier"](torch.from_numpy(probe)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_the_classifier_is_stored_with_float16_weights_that_its_torch_weights_equal(mbf_bundle: Path) -> None:
    """fc1 (the bulk of Table I) is stored as float16 behind a Cast: the file is about half the float32 one, and
    weights.safetensors, the graph and the torch rebuild from the graph hold the same (rounded) values."""
    from safetensors.numpy import load_file

    from bfm_deploy.onnx_graph import read_graph
    from bfm_models import create_model
    from bfm_models.pretrained import onnx_state_dict

    graph = read_graph(mbf_bundle / "classifier.onnx")
    stored = graph.initializers["fc1.weight"]
    assert stored.dtype == np.float16 and graph.nodes[0].op_type == "Cast"
    params = Bundle.load(mbf_bundle).models["classifier"].params
    assert (mbf_bundle / "classifier.onnx").stat().st_size < 0.55 * 4 * params
    torch_weights = load_file(str(mbf_bundle / "weights.safetensors"))["classifier.fc1.weight"]
    rebuilt = onnx_state_dict(mbf_bundle / "classifier.onnx", create_model("classifier"))["fc1.weight"].numpy()
    assert np.array_equal(torch_weights, stored.astype(np.float32)) and np.array_equal(rebuilt, torch_weights)


def test_float16_weights_keep_float32_where_a_value_is_past_float16s_range(tmp_path: Path) -> None:
    """One rule for module and graph: a large weight within float16's range is rounded in the module and stored
    as float16 in the graph; one holding a value float16 cannot hold stays float32 in both."""
    from bfm_deploy.onnx_graph import read_graph
    from bfm_models.onnx_export import FLOAT16_MAX, export_onnx

    for largest, stored in ((1.0, np.float16), (2 * FLOAT16_MAX, np.float32)):
        torch.manual_seed(0)
        module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 112 * 112, 2))
        with torch.no_grad():
            module[1].weight[0, 0] = largest
        before = module[1].weight.detach().clone()
        path = tmp_path / f"linear-{largest}.onnx"
        export_onnx(module, path, "logits", 17, float16_weights=True)
        weight = next(v for v in read_graph(path).initializers.values() if v.size == before.numel())
        assert weight.dtype == stored
        after = module[1].weight.detach()
        assert torch.equal(after, before.half().float() if stored == np.float16 else before)
        assert np.array_equal(weight.astype(np.float32), after.numpy())  # the graph holds the module's weights


def test_update_re_exports_an_older_float32_classifier_with_its_mask_threshold(tmp_path: Path, mbf_bundle: Path,
                                                                                data_dir: Path) -> None:
    """--update BUNDLE --classifier BUNDLE on a bundle written before float16 weights (classifier.onnx float32,
    no weights.safetensors): the classifier is rebuilt from its graph and stored as float16, its calibrated mask
    threshold and origin are kept, and it decides as before on real faces, bright and darkened."""
    from bfm_deploy.onnx_graph import read_graph
    from bfm_deploy.verifier import Verifier
    from bfm_models.onnx_export import export_onnx
    from bfm_train.export.update import UpdateOptions, update_bundle
    from tests.conftest import DARKEN, brightness_classifier

    old = tmp_path / "old"
    shutil.copytree(mbf_bundle, old)
    (old / "weights.safetensors").unlink()
    export_onnx(brightness_classifier(), old / "classifier.onnx", "logits", 17)  # float32, as exports used to be
    manifest = json.loads((old / "manifest.json").read_text())
    manifest.pop("weights")
    manifest["models"]["classifier"]["sha256"] = sha256_file(old / "classifier.onnx")
    manifest["mask_threshold"] = {"value": 0.4, "calibration": "test threshold"}
    (old / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    assert read_graph(old / "classifier.onnx").initializers["fc1.weight"].dtype == np.float32
    new = tmp_path / "new"
    shutil.copytree(old, new)
    update_bundle(new, UpdateOptions(classifier=new, data_dir=data_dir), **QUIET)

    assert read_graph(new / "classifier.onnx").initializers["fc1.weight"].dtype == np.float16
    assert (new / "classifier.onnx").stat().st_size < 0.55 * (old / "classifier.onnx").stat().st_size
    after = Bundle.load(new)
    assert after.mask_threshold == 0.4 and after.mask_threshold_entry is not None
    assert after.mask_threshold_entry.calibration == "test threshold (carried from bundle mbf)"
    assert after.manifest.source["classifier"].startswith("from bundle mbf (classifier.onnx sha256 ")
    assert after.manifest.source["classifier"].endswith(f"which had it {manifest['source']['classifier']}")
    crops = [cv2.imread(str(p)) for p in sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[:24]]
    crops += [(c.astype(np.float32) * DARKEN).astype(np.uint8) for c in crops]
    with Verifier(old, backend="ort") as before, Verifier(new, backend="ort") as now:
        p_old = before.mask_probability(crops, aligned=True)
        p_new = now.mask_probability(crops, aligned=True)
    assert ((p_old >= 0.4) == (p_new >= 0.4)).all() and 0 < (p_new >= 0.4).sum() < len(crops)
    assert np.abs(p_old - p_new).max() < 1e-3


def test_classifier_from_a_bundle_brings_its_calibrated_mask_threshold(mbf_bundle: Path, data_dir: Path,
                                                                        tmp_path: Path) -> None:
    """A calibrated mask threshold belongs to its classifier: --classifier BUNDLE carries it into the new bundle,
    and --mask-calibration replaces it."""
    import json
    import shutil

    from bfm_deploy.bundle import Bundle
    from bfm_train.export import ExportOptions, export_source, load_source

    assert load_source(None, ExportOptions(from_pretrained="w600k_mbf", classifier=str(mbf_bundle))).mask_threshold is None
    calibrated = tmp_path / "calibrated"
    shutil.copytree(mbf_bundle, calibrated)
    manifest = json.loads((calibrated / "manifest.json").read_text())
    manifest["mask_threshold"] = {"value": 0.297, "calibration": "balanced-accuracy threshold on 10 faces"}
    (calibrated / "manifest.json").write_text(json.dumps(manifest))
    options = ExportOptions(from_pretrained="w600k_mbf", classifier=str(calibrated), out=tmp_path / "new",
                            thresholds={"full": 0.3, "partial": 0.3}, parity_images=2, torch_weights=False)
    new = Bundle.load(export_source(load_source(None, options), options, log=lambda _m: None))
    assert new.mask_threshold == pytest.approx(0.297)
    assert new.mask_threshold_entry is not None
    assert new.mask_threshold_entry.calibration.endswith("(carried from bundle mbf)")  # the manifest's name
    faces = sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[:6]
    calibration = tmp_path / "calibration.txt"  # labels need not be true: any faces calibrate some threshold
    calibration.write_text("".join(f"{face}\t{i % 2}\n" for i, face in enumerate(faces)))
    recalibrated = replace(options, out=tmp_path / "recalibrated", mask_calibration=calibration)
    entry = Bundle.load(export_source(load_source(None, recalibrated), recalibrated, log=lambda _m: None)).mask_threshold_entry
    assert entry is not None and "calibration.txt" in entry.calibration and "carried" not in entry.calibration
