"""The routing rule and the mask-threshold calibration, and a bundle update that swaps the classifier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bfm_deploy.bundle import Bundle
from bfm_deploy.errors import BfmError
from bfm_deploy.routing import DEFAULT_MASK_THRESHOLD, calibrate_mask_threshold, is_masked, mask_probability, partial_route
from tests.conftest import DARKEN, brightness_classifier


def test_mask_probability_and_routes() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    probs = mask_probability(logits)
    np.testing.assert_allclose(probs, [1 / (1 + np.e**2), 1 / (1 + np.e**-2), 0.5], rtol=1e-6)
    assert is_masked(probs).tolist() == [False, True, True]  # 0.5 counts as masked: the argmax rule, ties to E_P
    assert partial_route(np.array([0.1, 0.7, 0.2]), np.array([0.2, 0.1, 0.69]), 0.7).tolist() == [False, True, False]


def test_calibration_maximises_balanced_accuracy() -> None:
    unmasked = np.array([0.01, 0.05, 0.2, 0.62])  # one unmasked face looks masked at 0.5
    masked = np.array([0.55, 0.8, 0.9, 0.99, 0.999, 0.97, 0.96, 0.95])
    value, balanced = calibrate_mask_threshold(unmasked, masked)
    assert 0.62 < value < 0.8 and balanced == pytest.approx((1.0 + 7 / 8) / 2)
    # the unbalanced count would prefer 0.5 (11 of 12 right either way): balancing weighs each class equally
    separable, perfect = calibrate_mask_threshold(np.array([0.1, 0.2]), np.array([0.8, 0.9]))
    assert perfect == 1.0 and 0.2 < separable < 0.8 and abs(separable - 0.5) < 0.31
    with pytest.raises(ValueError):
        calibrate_mask_threshold(np.array([]), masked)


def test_bundle_mask_threshold_is_optional_and_checked(runtime_bundle: Path, tmp_path: Path) -> None:
    assert Bundle.load(runtime_bundle).mask_threshold == DEFAULT_MASK_THRESHOLD
    copy = tmp_path / "b"
    shutil.copytree(runtime_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["mask_threshold"] = {"value": 0.7, "calibration": "test"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert Bundle.load(copy).mask_threshold == 0.7
    from bfm_deploy.verifier import Verifier

    assert Verifier(copy, backend="ort").mask_threshold == 0.7  # the runtime follows the bundle
    assert Verifier(copy, backend="ort", mask_threshold=0.4).mask_threshold == 0.4
    manifest["mask_threshold"]["value"] = 1.0
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BfmError, match="mask_threshold.value' must be a probability"):
        Bundle.load(copy)


def test_update_swaps_the_classifier_and_calibrates_its_threshold(mbf_bundle: Path, data_dir: Path,
                                                                  tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from bfm_train.export.update import UpdateOptions, update_bundle

    from bfm_models import create_model

    classifier = brightness_classifier()
    with torch.no_grad():
        classifier.fc2.bias[1] += 1.0  # another network than the bundle's (which is this classifier as it is)
    checkpoint = tmp_path / "c.safetensors"  # a classifier-only run: its E_F is the frozen pretrained one
    tensors = {f"classifier.{k}": v.contiguous() for k, v in classifier.state_dict().items()}
    tensors.update({f"full.{k}": v.contiguous() for k, v in create_model("mbf").state_dict().items()})
    save_file(tensors, str(checkpoint), metadata={"format": "bfm-checkpoint/1", "backbone": "mbf", "recipe": "bfm",
                                                   "config": json.dumps({}), "epoch": "1"})
    faces = sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[:6]
    lines = []
    for i, face in enumerate(faces):
        dark = tmp_path / f"dark{i}.png"
        cv2.imwrite(str(dark), (cv2.imread(str(face)).astype(np.float32) * DARKEN).astype(np.uint8))
        lines += [f"{face}\t0", f"{dark.name}\t1"]
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("\n".join(lines) + "\n")
    copy = tmp_path / "bundle"
    shutil.copytree(mbf_bundle, copy)
    update_bundle(copy, UpdateOptions(classifier=checkpoint, mask_calibration=calibration, data_dir=data_dir),
                  log=lambda _: None)
    bundle = Bundle.load(copy)
    assert bundle.models["classifier"].sha256 != Bundle.load(mbf_bundle).models["classifier"].sha256
    assert bundle.weights is None and not (copy / "weights.safetensors").exists()  # it held the old classifier
    assert 0.0 < bundle.mask_threshold < 1.0 and "balanced accuracy 100.00%" in bundle.manifest.to_dict()["mask_threshold"]["calibration"]
    assert bundle.manifest.source["classifier"].startswith("from c.safetensors")
    assert bundle.models["full"].sha256 == Bundle.load(mbf_bundle).models["full"].sha256  # extractors untouched
    with torch.inference_mode():
        assert classifier(torch.zeros(1, 3, 112, 112)).shape == (1, 2)
    with pytest.raises(BfmError, match="needs something to change"):
        update_bundle(copy, UpdateOptions(), log=lambda _: None)
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{faces[0]}\t0\n")
    with pytest.raises(BfmError, match="needs both masked"):
        update_bundle(copy, UpdateOptions(mask_calibration=bad), log=lambda _: None)
    assert Bundle.load(copy).mask_threshold == bundle.mask_threshold  # a failed update changed nothing
    # tools/mask_heldout.py scores the bundle on such a list at its calibrated threshold: every face right here,
    # and the shipped bundle (no such brightness rule) is scored on the same faces beside it.
    import importlib.util

    from click.testing import CliRunner

    spec = importlib.util.spec_from_file_location("mask_heldout", Path(__file__).parents[2] / "tools" / "mask_heldout.py")
    assert spec is not None and spec.loader is not None
    heldout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(heldout)
    run = CliRunner().invoke(heldout.main, ["--bundle", f"dark={copy}", "--bundle", f"plain={mbf_bundle}",
                                            "--set", f"six={calibration}", "--json"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    assert report["results"]["dark"]["six"] == {"threshold": bundle.mask_threshold, "unmasked_accuracy": 100.0,
                                                "masked_accuracy": 100.0, "balanced_accuracy": 100.0, "faces": 12}
    assert report["results"]["plain"]["six"]["faces"] == 12
    bad_run = CliRunner().invoke(heldout.main, ["--bundle", str(copy), "--set", f"six={calibration}"])
    assert bad_run.exit_code != 0 and "--bundle takes NAME=PATH" in bad_run.output
