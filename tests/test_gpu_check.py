"""benchmarks/gpu_check on a machine without a GPU: its one-line refusal, its loud errors, and its CPU dry run
(every step of the check at the smallest size), run the way a GPU machine runs it: PYTHONPATH=. and no install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "gpu_check" / "gpu_check.py"


def _run(*args: str, cwd: Path, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OUT", None)
    if data_dir is not None:
        env["BFM_DATA"] = str(data_dir)
    return subprocess.run([sys.executable, str(CHECK), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def test_without_a_gpu_it_exits_2_with_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = _run(cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no CUDA GPU"), result.stderr
    bad = _run("--device", "cpu", "--bundle", str(tmp_path / "nothing"), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: "), bad.stderr
    parts = _run("--device", "cpu", "--parts", "parity,nonsense", cwd=tmp_path)
    assert parts.returncode == 2 and parts.stderr.startswith("error: --parts takes"), parts.stderr


def test_the_cpu_dry_run_checks_parity_and_writes_its_report(tmp_path: Path, data_dir: Path) -> None:
    # on the faces a GPU machine gets: what --pack-data carries
    sys.path.insert(0, str(CHECK.parent))
    try:
        from data import pack
    finally:
        sys.path.remove(str(CHECK.parent))
    pack(data_dir, tmp_path / "packed")
    result = _run("--device", "cpu", "--out", str(tmp_path / "out"), cwd=tmp_path, data_dir=tmp_path / "packed")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    checks = {row["check"] for row in report["parity"]}
    assert {"pairs lfw-aligned", "pairs lfw-raw", "pairs mfr2", "detections (top face)",
            "embeddings full (uint8)", "mask decisions (float)"} <= checks
    assert all(row["ok"] for row in report["parity"])
    assert report["pair_counts"] == {"lfw-aligned": 4, "lfw-raw": 2, "mfr2": 2}
    variants = {(t["variant"], t["batch"]) for t in report["throughput"]}
    assert variants == {(v, b) for v in ("fp32 eager", "fp32 +channels-last +uint8") for b in (1, 2)}
    assert any(key.endswith("routed / E_F alone") for key in report["pipeline"])
    assert report["targets"] == []  # targets are GPU figures: never claimed from a CPU run
    service = report["service"]  # the serve extra is installed here: both servers ran under load
    assert service["measured"], service
    assert {name: [row["clients"] for row in rows] for name, rows in service["servers"].items()} == {
        "batched": [1, 2], "batch-1": [1, 2]}
    assert all(row["errors"] == 0 and row["completed"] > 0 for rows in service["servers"].values() for row in rows)
    assert (tmp_path / "out" / "gpu_check.png").stat().st_size > 1000


def test_the_faces_a_gpu_run_reads_can_be_packed_to_travel_with_the_tree(tmp_path: Path, data_dir: Path) -> None:
    sys.path.insert(0, str(CHECK.parent))
    try:
        from data import PACKED_PAIRS, SERVICE_PAIRS, load_pairs, pack, sets_lfw_head
    finally:
        sys.path.remove(str(CHECK.parent))
    packed = tmp_path / "packed"
    files, size = pack(data_dir, packed)
    sets = load_pairs(packed, **PACKED_PAIRS)  # every pair a GPU run reads is there, the same pairs as here
    want = load_pairs(data_dir, **PACKED_PAIRS)
    assert [(p.left.name, p.right.name) for p in sets.mfr2] == [(p.left.name, p.right.name) for p in want.mfr2]
    assert (len(sets.lfw_aligned), len(sets.lfw_raw), len(sets.mfr2)) == tuple(PACKED_PAIRS.values())
    assert all(p.left.is_file() and p.right.is_file() for p in sets_lfw_head(packed, SERVICE_PAIRS))
    assert size == sum(f.stat().st_size for f in packed.rglob("*") if f.is_file()) and files > 100
    # MFR2's photos travel as JPEG: still the same faces, a little compression apart
    from bfm_deploy.images import load_image

    first = want.mfr2[0].left
    got, original = load_image(packed / first.relative_to(data_dir)).astype(float), load_image(first).astype(float)
    assert got.shape == original.shape and abs(got - original).mean() < 3.0
    # The device tool carries at most 64 MiB: the tracked tree, this pack and the serve wheels (3.4 MB measured)
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the tree's size is unknown")
    tree = sum((ROOT / name).stat().st_size for name in listed.stdout.decode().split("\0")
               if name and (ROOT / name).is_file())
    assert tree + size + 3_600_000 <= 64 * 2**20, f"tree {tree / 1e6:.1f} MB + pack {size / 1e6:.1f} MB + wheels"


def test_carried_wheels_are_unpacked_onto_the_import_paths_where_the_serve_extra_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import zipfile

    monkeypatch.syspath_prepend(str(CHECK.parent))
    import service

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "carried_probe-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("carried_probe/__init__.py", "VALUE = 7\n")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(service, "missing_modules", lambda: [])
    assert service.use_wheels(wheels, tmp_path / "site") == 0  # nothing missing: nothing unpacked
    monkeypatch.setattr(service, "missing_modules", lambda: ["fastapi"])
    assert service.use_wheels(wheels, tmp_path / "site") == 1
    assert os.environ["PYTHONPATH"] == f"{tmp_path / 'site'}{os.pathsep}/elsewhere"  # first for the servers
    assert sys.path[-1] == str(tmp_path / "site")  # last here, after the packages already loaded
    probe = subprocess.run([sys.executable, "-c", "import carried_probe; print(carried_probe.VALUE)"],
                           capture_output=True, text=True, env=dict(os.environ))
    assert probe.stdout.strip() == "7", probe.stderr
