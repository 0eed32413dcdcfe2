"""tools/compare_classifiers.py: a bundle against itself decides alike (exit 0); against a copy whose classifier
calls a different set of faces masked it counts the changed decisions and exits 1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from bfm_deploy.bundle import sha256_file
from bfm_deploy.onnx_graph import replace_initializers
from tests.fixtures.bundles import STEEP

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "compare_classifiers.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def _with_cut(bundle: Path, target: Path, pixel_mean: float) -> Path:
    """A copy of the brightness-classifier bundle that calls a face masked below ``pixel_mean`` instead: the cut
    is fc2's masked bias alone (tests/fixtures/bundles.py)."""
    shutil.copytree(bundle, target)
    graph = target / "classifier.onnx"
    bias = np.array([0.0, STEEP * pixel_mean / 127.5], np.float32)
    graph.write_bytes(replace_initializers(graph.read_bytes(), {"fc2.bias": bias}))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["models"]["classifier"]["sha256"] = sha256_file(graph)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def test_alike_and_different_classifiers(runtime_bundle: Path, data_dir: Path, tmp_path: Path) -> None:
    same = _run(str(runtime_bundle), str(runtime_bundle), "--data-dir", str(data_dir), "--every", "10",
                "--json-out", str(tmp_path / "same.json"))
    assert same.returncode == 0, same.stderr
    sets = json.loads((tmp_path / "same.json").read_text())["sets"]
    assert {name: row["decisions_differ"] for name, row in sets.items()} == {"mfr2": 0, "lfw": 0}
    assert all(row["faces"] > 10 and row["max_probability_change"] == 0.0 for row in sets.values())
    # masked below a mean pixel value of 255: every face is masked for the copy, none for the original
    other = _with_cut(runtime_bundle, tmp_path / "other", 255.0)
    differ = _run(str(runtime_bundle), str(other), "--data-dir", str(data_dir), "--every", "10")
    assert differ.returncode == 1, differ.stderr
    faces = {line.split(":")[0]: line for line in differ.stdout.splitlines()}
    assert set(faces) == {"mfr2", "lfw"}
    for name, row in sets.items():
        assert f"{row['faces']} faces" in faces[name] and f"{row['faces']} decisions differ" in faces[name]
    bad = _run(str(tmp_path / "nothing"), str(runtime_bundle))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
