"""bfm-explain and bfm_deploy.explain: the guided rule, the maps, the mask-region measure, the tool's errors.

The region measure runs everywhere; what needs the networks as torch modules skips without torch, and without
torch the tool must say which extra to install.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bfm_deploy.datasets import read_mfr2_labels
from bfm_deploy.explain import mask_region_share, nose_row

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "engines" / "demo"
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch (the explain or train extra)")


def test_the_mask_region_starts_at_the_templates_nose_line() -> None:
    assert nose_row(112) == 72  # the nose tip is at y = 71.74: row 72 is the first whose centre lies below it
    maps = np.zeros((3, 112, 112), np.float32)
    maps[0, 72:, :] = 1.0  # all below
    maps[1, :72, :] = 1.0  # all above
    maps[2] = 1.0  # uniform: the region's share of the rows
    assert mask_region_share(maps) == pytest.approx([1.0, 0.0, 40 / 112])
    assert mask_region_share(np.zeros((112, 112))) == 0.0
    with pytest.raises(ValueError):
        mask_region_share(-np.ones((112, 112)))


def test_without_torch_the_tool_names_its_extra(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['torch'] = None; sys.argv = ['bfm-explain', *sys.argv[1:]]\n"
            "from bfm_deploy.explain.cli import main; main()")
    face = REPO / "bfm_deploy" / "assets" / "parity"
    photos = sorted(p for p in face.iterdir() if p.suffix in (".jpg", ".png"))
    run = subprocess.run([sys.executable, "-c", code, str(photos[0]), str(photos[1])], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert "pip install 'bfm[explain]'" in lines[0]


@needs_torch
def test_guided_rule_passes_only_positive_gradients_through_active_units() -> None:
    import torch
    from torch import nn

    from bfm_deploy.explain.guided import guided

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.PReLU(4), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 6, requires_grad=True)
    with guided(model):
        model(x).norm(dim=1).sum().backward()
    assert x.grad is not None
    got = x.grad.clone()
    # the same by hand: each activation's ordinary local gradient, then the positive part of what passes
    first, relu, second, prelu, last = model
    h1 = first(x)
    a1 = relu(h1)
    h2 = second(a1)
    a2 = prelu(h2)
    out = last(a2)
    g = torch.autograd.grad(out.norm(dim=1).sum(), out)[0]
    g = g @ last.weight
    g = (g * torch.where(h2 > 0, torch.ones_like(h2), prelu.weight.expand_as(h2))).clamp(min=0)
    g = g @ second.weight
    g = (g * (h1 > 0)).clamp(min=0)
    expected = g @ first.weight
    assert torch.allclose(got, expected, atol=1e-6)
    x.grad = None
    model(x).norm(dim=1).sum().backward()  # the hooks are gone: the plain gradient differs
    assert not torch.allclose(x.grad, got, atol=1e-4)


@pytest.fixture(scope="module")
def mfr2_faces(data_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Six masked and six unmasked MFR2 faces (by MFR2's labels), aligned by the demo's detector."""
    from bfm_deploy.explain import aligned_crops

    labels = read_mfr2_labels(data_dir / "mfr2" / "mfr2_labels.txt", data_dir / "mfr2")
    paths = sorted(labels)
    masked = [p for p in paths if labels[p] != "no-mask"][::25][:6]
    unmasked = [p for p in paths if labels[p] == "no-mask"][::15][:6]
    crops = aligned_crops(masked + unmasked, DEMO)
    return crops[:6], crops[6:]


@needs_torch
def test_maps_are_non_negative_deterministic_and_of_the_crops_shape(
        mfr2_faces: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    from bfm_deploy.eval.methods import parse_spec
    from bfm_deploy.explain import Explainer

    explainer = Explainer(parse_spec("ours", str(DEMO)))
    crops = mfr2_faces[0][:3]
    maps = explainer.saliency(crops, "partial")
    assert maps.shape == (3, 112, 112) and maps.dtype == np.float32
    assert (maps >= 0).all() and (maps.reshape(3, -1).max(axis=1) > 0).all()
    np.testing.assert_array_equal(maps, explainer.saliency(crops, "partial"))
    # a face's map does not depend on the faces batched with it (eval mode: no coupling across rows)
    np.testing.assert_allclose(explainer.saliency(crops[:1], "partial")[0], maps[0], rtol=1e-4, atol=1e-7)


@needs_torch
def test_e_p_looks_less_at_the_mask_region_than_e_f(mfr2_faces: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    """The direction tools/saliency_share.py reports over all of MFR2 (benchmarks/results/explain/)."""
    from bfm_deploy.eval.methods import parse_spec
    from bfm_deploy.explain import Explainer

    explainer = Explainer(parse_spec("ours", str(DEMO)))
    for crops in mfr2_faces:
        full = mask_region_share(explainer.saliency(crops, "full"))
        partial = mask_region_share(explainer.saliency(crops, "partial"))
        assert partial.mean() < full.mean(), (partial, full)


@needs_torch
def test_bfm_explain_writes_json_and_plot_and_agrees_with_bfm_verify(tmp_path: Path, data_dir: Path) -> None:
    from bfm_deploy.explain.cli import main
    from bfm_deploy.verifier import Verifier

    a, b = data_dir / "mfr2" / "AdrianDunbar" / "AdrianDunbar_0001.png", data_dir / "mfr2" / "AdrianDunbar" / "AdrianDunbar_0002.png"
    out, plot = tmp_path / "e.json", tmp_path / "e.png"
    result = CliRunner().invoke(main, [str(a), str(b), "--bundle", str(DEMO), "--compare",
                                       f"Baseline 1={DEMO}:full", "--json-out", str(out), "--plot", str(plot),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    methods = json.loads(out.read_text())["methods"]
    assert [m["mode"] for m in methods] == ["routed", "full"]
    assert plot.stat().st_size > 10_000
    with Verifier(DEMO, backend="ort") as verifier:
        want = verifier.verify(a, b)
    ours = methods[0]
    assert (ours["same"], ours["route"], ours["case"]) == (want.same, want.route, want.case)
    assert ours["score"] == pytest.approx(want.score, abs=1e-4)
    assert methods[1]["route"] == "full" and all(f["network"] == "full" for f in methods[1]["faces"])
    assert "bundle: same person" in result.output or "bundle: different people" in result.output


@pytest.mark.parametrize("args, message", [
    (["missing.png", "missing.png"], "image not found"),
    (["README.md", "README.md"], "not an image format"),
    (["{face}", "{face}", "--compare", "x=nowhere"], "bundle nowhere not found"),
    (["{face}", "{face}", "--compare", "oops"], "expected NAME=BUNDLE"),
    (["{face}", "{face}", "--plot", "out.jpg"], "must name a .png file"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    from bfm_deploy.explain.cli import main

    face = str(next(p for p in sorted((REPO / "bfm_deploy" / "assets" / "parity").iterdir()) if p.suffix in (".jpg", ".png")))
    result = CliRunner().invoke(main, [a.replace("{face}", face) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
