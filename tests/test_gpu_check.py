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
    result = _run("--device", "cpu", "--out", str(tmp_path / "out"), cwd=tmp_path, data_dir=data_dir)
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
    assert (tmp_path / "out" / "gpu_check.png").stat().st_size > 1000


def test_the_faces_it_reads_can_be_packed_for_a_gpu_machine(tmp_path: Path, data_dir: Path) -> None:
    sys.path.insert(0, str(CHECK.parent))
    try:
        from data import load_pairs, pack
    finally:
        sys.path.remove(str(CHECK.parent))
    copied = pack(data_dir, tmp_path / "packed")
    sets = load_pairs(tmp_path / "packed", 0, 0, 0)  # every pair's images are there
    assert (len(sets.lfw_aligned), len(sets.lfw_raw), len(sets.mfr2)) == (600, 600, 848)
    assert copied == len({p for pairs, _ in sets.named().values() for pair in pairs for p in (pair.left, pair.right)}) + 2
