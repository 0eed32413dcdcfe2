"""bfm-eval: metrics on hand-made score sets, fold specs, pair lists, and the command line on real faces."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from bfm_deploy.bundle import Bundle
from bfm_deploy.errors import BfmError
from bfm_deploy import metrics
from bfm_deploy.eval import protocols, report
from bfm_deploy.eval.cli import main
from bfm_deploy.eval.faces import DetectingLoader
from bfm_deploy.eval.folds import parse_fold_spec
from bfm_deploy.eval.masked_lfw import MaskedImageCache, MaskSettings, masked_lfw_sets
from bfm_deploy.eval.methods import collect_methods, parse_compare, parse_spec
from bfm_deploy.eval.protocols import EvalPair, EvalSet
from bfm_deploy.eval.scoring import FeatureCache, MethodScores, score_pairs
from tests.conftest import DARKEN

DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "engines" / "demo"

# ---------------------------------------------------------------- metrics


def test_perfectly_separable_scores_give_full_accuracy_and_zero_eer() -> None:
    rng = np.random.default_rng(0)
    same = np.tile([True, False], 50)
    scores = np.where(same, rng.uniform(0.6, 1.0, 100), rng.uniform(-0.2, 0.4, 100))
    result = metrics.evaluate_scores(scores, same)
    assert result.accuracy == 1.0
    assert result.std == 0.0
    assert result.eer == 0.0
    assert result.tar_at_far_1e3 == 1.0
    assert result.cases == {"1": None, "2": None, "3": None}


def test_two_fold_case_computed_by_hand() -> None:
    # Fold 0 is scored with fold 1's threshold (0.8 + 0.45) / 2 = 0.625: the 0.6 same pair is rejected -> 3/4.
    # Fold 1 is scored with fold 0's threshold (0.6 + 0.4) / 2 = 0.5: all four right -> 4/4.
    scores = np.array([0.9, 0.4, 0.6, 0.1, 0.8, 0.3, 0.45, 0.2])
    same = np.array([1, 0, 1, 0, 1, 0, 0, 0], dtype=bool)
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    cases = np.array([1, 2, 3, 1, 1, 2, 3, 1])
    result = metrics.evaluate_scores(scores, same, folds, cases)
    np.testing.assert_allclose(result.cross_validation.fold_thresholds, [0.625, 0.5])
    np.testing.assert_allclose(result.cross_validation.fold_accuracies, [0.75, 1.0])
    assert result.accuracy == pytest.approx(0.875)
    assert result.std == pytest.approx(0.125)  # population std of (0.75, 1.0)
    assert result.cases == {"1": 1.0, "2": 1.0, "3": 0.5}


def test_std_is_population_std_of_fold_accuracies() -> None:
    cv = metrics.CrossValidation(np.array([0.9, 1.0, 0.95, 0.85]), np.zeros(4), np.zeros(1, dtype=bool))
    assert cv.accuracy == pytest.approx(0.925)
    assert cv.std == pytest.approx(np.sqrt(np.mean((np.array([0.9, 1.0, 0.95, 0.85]) - 0.925) ** 2)))


def test_equal_error_rate_at_an_roc_point_and_interpolated() -> None:
    # At threshold 0.7: one false accept of 3 and one false reject of 3.
    roc = metrics.roc_curve(np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1]), np.array([1, 1, 1, 0, 0, 0], dtype=bool))
    assert metrics.equal_error_rate(roc) == pytest.approx(1 / 3)
    # FRR stays 1/3 while FAR jumps 0 -> 1/2 at threshold 0.6: they cross at 1/3 on that segment.
    roc = metrics.roc_curve(np.array([0.9, 0.8, 0.5, 0.6, 0.1]), np.array([1, 1, 1, 0, 0], dtype=bool))
    assert metrics.equal_error_rate(roc) == pytest.approx(1 / 3)


def test_tar_at_far_on_a_constructed_set() -> None:
    # 2000 different pairs: FAR 1e-3 allows exactly two false accepts (the 0.99 and 0.98 impostors).
    negatives = np.concatenate([[0.99, 0.98], np.linspace(0.0, 0.49, 1998)])
    positives = np.concatenate([np.full(50, 0.995), np.full(30, 0.985), np.full(20, 0.3)])
    scores = np.concatenate([positives, negatives])
    same = np.concatenate([np.ones(100, dtype=bool), np.zeros(2000, dtype=bool)])
    roc = metrics.roc_curve(scores, same)
    assert metrics.tar_at_far(roc, 1e-3) == pytest.approx(0.8)
    assert metrics.tar_at_far(roc, 0.0) == pytest.approx(0.5)
    assert roc.far[0] == 0.0 and roc.tar[0] == 0.0
    assert roc.far[-1] == 1.0 and roc.tar[-1] == 1.0


def test_roc_points_follow_from_their_thresholds() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=200), 1)  # many ties
    same = rng.random(200) < 0.5
    roc = metrics.roc_curve(scores, same)
    for threshold, far, tar in zip(roc.thresholds, roc.far, roc.tar):
        accepted = scores >= threshold
        assert far == pytest.approx(np.mean(accepted[~same]))
        assert tar == pytest.approx(np.mean(accepted[same]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 20), st.booleans()), min_size=1, max_size=40))
def test_best_threshold_matches_brute_force(pairs: list[tuple[int, bool]]) -> None:
    scores = np.array([s / 10 for s, _ in pairs])
    same = np.array([b for _, b in pairs])
    candidates = np.concatenate([scores, [scores.max() + 1]])
    brute = max(np.mean((scores >= t) == same) for t in candidates)
    chosen = metrics.best_threshold(scores, same)
    assert np.mean((scores >= chosen) == same) == pytest.approx(brute)


def test_contiguous_folds_split_like_kfold() -> None:
    folds = metrics.contiguous_folds(23)
    assert np.bincount(folds).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    assert np.all(np.diff(folds) >= 0)
    with pytest.raises(BfmError):
        metrics.contiguous_folds(5)


def test_mask_accuracy_and_bad_inputs() -> None:
    assert metrics.mask_accuracy(np.array([0.9, 0.2, 0.5, 0.49]), np.array([1, 0, 0, 1], dtype=bool)) == 0.5
    with pytest.raises(BfmError):
        metrics.evaluate_scores(np.array([0.1, np.nan]), np.array([True, False]), np.array([0, 1]))
    with pytest.raises(BfmError):
        metrics.cross_validate(np.array([0.1, 0.2]), np.array([True, False]), np.array([0, 0]))


# ---------------------------------------------------------------- fold specs and method specs


def test_fold_specs_are_one_based() -> None:
    assert parse_fold_spec("6-10", 10) == [5, 6, 7, 8, 9]
    assert parse_fold_spec("1,3,5-6", 10) == [0, 2, 4, 5]
    assert parse_fold_spec(" 2 , 2, 1 ", 10) == [0, 1]
    assert parse_fold_spec("all", 10) == list(range(10))


@pytest.mark.parametrize("spec", ["", "0-3", "6-11", "10-6", "a-b", "3", "1-2-3", "1,,2", "-2"])
def test_bad_fold_specs_are_refused(spec: str) -> None:
    with pytest.raises(BfmError):
        parse_fold_spec(spec, 10)


def test_method_specs(tmp_path: Path) -> None:
    assert parse_spec("x", "engines/demo").mode == "routed"
    assert parse_spec("x", "engines/demo:full") == parse_spec("x", "engines/demo:full")
    method = parse_compare("Baseline 1=engines/demo:full")
    assert (method.name, method.bundle, method.mode) == ("Baseline 1", Path("engines/demo"), "full")
    assert parse_spec("x", "C:/weird:partial").bundle == Path("C:/weird")
    assert parse_spec("x", "dir:notanetwork").bundle == Path("dir:notanetwork")
    with pytest.raises(BfmError):
        parse_compare("no-equals-sign")
    with pytest.raises(BfmError):
        collect_methods(None, ())
    with pytest.raises(BfmError):  # missing bundle folder
        collect_methods(str(tmp_path / "absent"), ())
    with pytest.raises(BfmError):  # duplicate names
        collect_methods(None, (f"a={tmp_path}", f"a={tmp_path}:full"))
    names = [m.name for m in collect_methods(str(tmp_path), (f"b1={tmp_path}:full",))]
    assert names == ["bundle", "b1"]


# ---------------------------------------------------------------- scoring with a counting test double


class CountingModel:
    """Masked iff the crop's first pixel is 255; embeddings depend on the crop and the route."""

    def __init__(self) -> None:
        self.calls: dict[str, list[int]] = {"mask": [], "full": [], "partial": []}

    def mask_probability(self, images, aligned=False):  # type: ignore[no-untyped-def]
        assert aligned
        self.calls["mask"].append(len(images))
        return np.array([0.9 if im[0, 0, 0] == 255 else 0.1 for im in images])

    def embed(self, images, route="full", aligned=False):  # type: ignore[no-untyped-def]
        assert aligned
        self.calls[route].append(len(images))
        sign = 1.0 if route == "full" else -1.0
        return np.stack([np.array([im[1, 1, 0], im[1, 1, 1], sign * 10.0], dtype=np.float64) for im in images])


def _crop(marker: int, a: int, b: int) -> np.ndarray:
    crop = np.zeros((112, 112, 3), np.uint8)
    crop[0, 0, 0] = marker
    crop[1, 1] = (a, b, 0)
    return crop


def _toy_set() -> tuple[EvalSet, dict[Path, np.ndarray]]:
    crops = {Path("a"): _crop(0, 3, 4), Path("b"): _crop(0, 4, 3), Path("c"): _crop(255, 1, 0), Path("d"): _crop(255, 0, 1)}
    pairs = [
        EvalPair(Path("a"), Path("b"), True, 0, 0),  # both unmasked -> full
        EvalPair(Path("a"), Path("c"), False, 0, 1),  # one masked -> partial
        EvalPair(Path("c"), Path("d"), True, 1, 2),  # both masked -> partial
        EvalPair(Path("b"), Path("a"), True, 1, 3),
    ]
    return EvalSet("toy", pairs, crops.__getitem__), crops


def _cos(x: np.ndarray, y: np.ndarray) -> float:
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def test_routed_scoring_runs_each_network_once_per_needed_image() -> None:
    evalset, _ = _toy_set()
    model = CountingModel()
    cache = FeatureCache(model, batch_size=3)
    scores = score_pairs(parse_spec("ours", "x"), evalset, cache)
    assert scores.routes.tolist() == ["full", "partial", "partial", "full"]
    assert sum(model.calls["mask"]) == 4 and max(model.calls["mask"]) <= 3  # batched, once per image
    assert sum(model.calls["full"]) == 2  # a, b
    assert sum(model.calls["partial"]) == 3  # a, c, d
    assert scores.scores[0] == pytest.approx(_cos(np.array([3, 4, 10.0]), np.array([4, 3, 10.0])))
    assert scores.scores[1] == pytest.approx(_cos(np.array([3, 4, -10.0]), np.array([1, 0, -10.0])))
    assert scores.scores[3] == pytest.approx(scores.scores[0])
    assert scores.mask_probability == {Path("a"): 0.1, Path("b"): 0.1, Path("c"): 0.9, Path("d"): 0.9}
    # A baseline on the same bundle reuses the full embeddings and never runs the classifier.
    baseline = score_pairs(parse_spec("b1", "x:full"), evalset, cache)
    assert baseline.routes.tolist() == ["full"] * 4 and baseline.mask_probability is None
    assert sum(model.calls["full"]) == 4 and sum(model.calls["mask"]) == 4  # only c, d were new


def test_cases_come_from_mask_labels() -> None:
    evalset, _ = _toy_set()
    assert evalset.cases() is None
    evalset.masked = {Path("a"): False, Path("b"): False, Path("c"): True, Path("d"): True}
    assert evalset.cases().tolist() == [1, 2, 3, 1]


# ---------------------------------------------------------------- generic pairs files and reports


def test_generic_pairs_file(tmp_path: Path) -> None:
    lines = ["# comment", ""] + [f"x{i}.jpg y{i}.jpg {i % 2} 0 {i % 3 == 0:d}" for i in range(12)]
    lines.append("with space.jpg\tz.jpg\t1")
    (tmp_path / "pairs.txt").write_text("\n".join(lines))
    pairs, masked = protocols.read_generic_pairs(tmp_path / "pairs.txt")
    assert len(pairs) == 13 and pairs[1].same and not pairs[0].same
    assert pairs[12].left == tmp_path / "with space.jpg"
    assert masked[tmp_path / "y3.jpg"] and not masked[tmp_path / "y4.jpg"] and not masked[tmp_path / "x3.jpg"]
    evalset = protocols.generic(tmp_path / "pairs.txt", protocols.load_aligned)
    assert np.bincount([p.fold for p in evalset.pairs]).tolist() == [2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    (tmp_path / "bad.txt").write_text("a.jpg b.jpg 2\n")
    with pytest.raises(BfmError):
        protocols.read_generic_pairs(tmp_path / "bad.txt")


def _result(variant: str, method: str, scores: np.ndarray, same: np.ndarray, routed: bool) -> report.MethodResult:
    cases = np.where(np.arange(len(same)) % 3 == 0, 2, 1)
    routes = np.where(cases == 1, "full", "partial") if routed else np.full(len(same), "full")
    return report.MethodResult(
        variant=variant,
        method=method,
        metrics=metrics.evaluate_scores(scores, same, None, cases),
        mask_accuracy=0.75 if routed else None,
        scores=MethodScores(scores, routes, None),
        same=same,
        bundle_threshold_accuracy=0.5,
    )


def test_json_table_and_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    same = np.tile([True, False], 30)
    scores = np.where(same, rng.normal(0.6, 0.2, 60), rng.normal(0.1, 0.2, 60))
    results = [_result("lfw", "bundle", scores, same, True)]
    document = report.to_json("lfw", 60, results)
    assert set(document) == {"dataset", "pairs", "results"} and list(document["results"]) == ["bundle"]
    entry = document["results"]["bundle"]
    assert set(entry) == {"accuracy", "std", "eer", "tar_at_far_1e-3", "cases", "mask_accuracy"}
    assert entry["accuracy"] == pytest.approx(100 * results[0].metrics.accuracy, abs=1e-3)
    assert entry["cases"]["3"] is None and entry["mask_accuracy"] == 75.0
    # Several sets and methods: VARIANT/NAME keys; a single bundle on several sets: VARIANT keys.
    many = [_result(v, m, scores, same, m == "ours") for v in ("masked-lfw/case3", "masked-lfw/case2") for m in ("b1", "ours")]
    keys = list(report.to_json("masked-lfw", 60, many)["results"])
    assert keys == ["masked-lfw/case3/b1", "masked-lfw/case3/ours", "masked-lfw/case2/b1", "masked-lfw/case2/ours"]
    single = [_result(v, "bundle", scores, same, True) for v in ("masked-lfw/case3", "masked-lfw/case2")]
    assert list(report.to_json("masked-lfw", 60, single)["results"]) == ["masked-lfw/case3", "masked-lfw/case2"]
    text = report.table(many)
    assert "b1" in text.splitlines()[0] and "case 2" in text and "case 3" not in text
    report.write_plot(tmp_path / "r.png", many)
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nope", "--bundle", "."], "unknown or missing --dataset"),
        (["--bundle", "."], "unknown or missing --dataset"),
        (["--dataset", "lfw", "--bundle", "{missing}"], "not found"),
        (["--dataset", "lfw", "--bundle", "{tmp}", "--data-dir", "{missing}"], "data dir"),
        (["--dataset", "lfw", "--bundle", "{tmp}", "--data-dir", "{tmp}"], "LFW pairs file not found"),
        (["--dataset", "lfw", "--bundle", "{tmp}", "--folds", "0-3", "--data-dir", "{data}"], "bad fold spec"),
        (["--dataset", "lfw", "--bundle", "{tmp}", "--backend", "gpu"], "'gpu' is not one of 'auto', 'trt', 'ort', 'openvino', 'openvino-f32', 'openvino-bf16', 'torch'"),
        (["--dataset", "lfw", "--compare", "x"], "bad --compare entry"),
        (["--dataset", "lfw", "--bundle", "{tmp}", "stray"], "unexpected argument 'stray'"),
        (["--dataset", "lfw", "--bundle", "{tmp}", "--data-dir", "{data}"], "is not a bundle"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    data = tmp_path / "data"
    (data / "lfw").mkdir(parents=True)
    (data / "lfw" / "pairs.txt").write_text("10 1\n" + "a 1 2\nb 1 c 1\n" * 10)
    values = {"{tmp}": str(tmp_path), "{missing}": str(tmp_path / "missing"), "{data}": str(data)}
    result = CliRunner().invoke(main, [values.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


# ---------------------------------------------------------------- masked LFW on real LFW crops


def test_masked_lfw_sets_are_cached_and_alternate_sides(data_dir: Path, tmp_path: Path) -> None:
    base = protocols.first_pairs_per_fold(protocols.select_folds(protocols.lfw(data_dir), [0, 1]), 2)
    assert len(base.pairs) == 8
    refused = base.pairs[-1].right
    calls: list[str] = []

    def lower_half_black(bgr: np.ndarray, key: str) -> np.ndarray:
        calls.append(key)
        if data_dir / "lfw" / "aligned112" / key == refused:
            raise BfmError("no landmarks")
        out = bgr.copy()
        out[60:] = 0
        return out

    root = data_dir / "lfw" / "aligned112"
    cache = MaskedImageCache(tmp_path / "masked", root, MaskSettings(seed=0), lower_half_black)
    case3, case2 = masked_lfw_sets(base, cache)
    assert sorted(calls) == sorted(p.relative_to(root).as_posix() for p in base.images)
    assert (case3.name, case2.name) == ("masked-lfw/case3", "masked-lfw/case2")
    assert len(case3.pairs) == len(case2.pairs) == 7 and "1 of 8 pairs left out" in case3.notes[0]
    assert case3.cases().tolist() == [3] * 7 and case2.cases().tolist() == [2] * 7
    for pair in case2.pairs:
        masked_side = pair.left if pair.index % 2 == 0 else pair.right
        assert masked_side.is_relative_to(tmp_path / "masked")
    crop = protocols.load_aligned(case3.pairs[0].left)
    assert crop.shape == (112, 112, 3) and crop[60:].max() == 0 and crop[:60].max() > 0

    def must_not_run(bgr: np.ndarray, key: str) -> np.ndarray:
        raise AssertionError("cached images must not be masked again")

    again = masked_lfw_sets(base, MaskedImageCache(tmp_path / "masked", root, MaskSettings(seed=0), must_not_run))
    assert [p.left for p in again[0].pairs] == [p.left for p in case3.pairs]
    assert not list((tmp_path / "masked").rglob("*.tmp"))
    with pytest.raises(BfmError, match="other settings"):
        masked_lfw_sets(base, MaskedImageCache(tmp_path / "masked", root, MaskSettings(seed=1), must_not_run))


# ---------------------------------------------------------------- the command line on real faces and a real bundle


def _tiny_pairs_file(data_dir: Path, out: Path) -> int:
    """20 LFW fold-1 pairs (10 same, 10 different); darkened copies stand in for masked faces, which the
    bundle fixture's brightness classifier calls masked: pairs 1, 5, ... have one, pairs 3, 7, ... two."""
    base = protocols.first_pairs_per_fold(protocols.select_folds(protocols.lfw(data_dir), [0, 1]), 5)
    lines = []
    for i, pair in enumerate(base.pairs):
        names = []
        for side, image in enumerate((pair.left, pair.right)):
            dark = (i % 4 == 1 and side == 1) or i % 4 == 3
            name = f"{i:02d}_{side}{'_dark' if dark else ''}.jpg"
            bgr = cv2.imread(str(image))
            cv2.imwrite(str(out / name), (bgr * DARKEN).astype(np.uint8) if dark else bgr)
            names.append((name, int(dark)))
        lines.append(f"{names[0][0]} {names[1][0]} {int(pair.same)} {names[0][1]} {names[1][1]}")
    (out / "pairs.txt").write_text("\n".join(lines) + "\n")
    return len(lines)


@pytest.mark.slow
def test_cli_on_a_tiny_pairs_file(data_dir: Path, runtime_bundle: Path, tmp_path: Path) -> None:
    count = _tiny_pairs_file(data_dir, tmp_path)
    args = ["--dataset", "pairs", "--data-dir", str(tmp_path), "--bundle", str(runtime_bundle), "--backend", "ort",
            "--json-out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"),
            "--compare", f"full only={runtime_bundle}:full", f"partial only={runtime_bundle}:partial"]  # paper-style list
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["dataset"] == "pairs" and document["pairs"] == count == 20
    assert list(document["results"]) == ["bundle", "full only", "partial only"]
    for entry in document["results"].values():
        assert set(entry) == {"accuracy", "std", "eer", "tar_at_far_1e-3", "cases", "mask_accuracy"}
        assert set(entry["cases"]) == {"1", "2", "3"} and all(v is not None for v in entry["cases"].values())
        assert 0 <= entry["accuracy"] <= 100 and 0 <= entry["eer"] <= 100
    ours = document["results"]["bundle"]
    assert ours["mask_accuracy"] == 100.0  # the brightness classifier sees every darkened crop
    assert document["results"]["full only"]["mask_accuracy"] is None
    assert ours["accuracy"] >= 80.0  # w600k_mbf on LFW pairs; far lower means a preprocessing bug
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
    routes_row = next(line for line in result.output.splitlines() if "pairs full/partial" in line)
    assert routes_row.split()[-3:] == ["10/10", "20/0", "0/20"]  # routed, full only, partial only
    # the Python API the CLI is a layer over: the same options, the same document
    from bfm_deploy.eval import EvalOptions, run_eval

    run = run_eval(EvalOptions(dataset="pairs", data_dir=tmp_path, bundle=str(runtime_bundle), backend="ort",
                               compare=(f"full only={runtime_bundle}:full", f"partial only={runtime_bundle}:partial")))
    assert run.to_json() == document and run.pairs == 20 and run.methods == 3


def test_detecting_loader_aligns_once_and_falls_back_to_resizing(data_dir: Path, tmp_path: Path) -> None:
    image = next((data_dir / "mfr2").glob("*/*_0001.png"))
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((160, 160, 3), 128, np.uint8))
    loader = DetectingLoader("auto", Bundle.load(DEMO_BUNDLE))
    loader.prefetch([image, blank], progress=False)
    crop = loader(image)
    assert crop.shape == (112, 112, 3) and loader(image) is crop
    assert loader(blank).shape == (112, 112, 3)
    assert loader.detector_name == "bundle:scrfd-500m"
    notes = loader.notes()
    assert loader.fallbacks == [blank] and "no face detected in 1 images" in notes[1], notes


def test_detecting_loader_rejects_bad_detector_names_and_uses_named_ones(data_dir: Path) -> None:
    image = next((data_dir / "mfr2").glob("*/*_0001.png"))
    with pytest.raises(BfmError, match="unknown detector 'retina'"):
        DetectingLoader(detector="retina")
    loader = DetectingLoader(detector="yunet")
    assert loader(image).shape == (112, 112, 3) and not loader.fallbacks and loader.detector_name == "yunet"


@pytest.mark.parametrize("detector", ["mtcnn", "auto"])
def test_cli_passes_the_detector_to_mfr2(data_dir: Path, detector: str) -> None:
    from bfm_deploy.eval import api

    mfr2 = api.verification_pairs(api.EvalOptions(dataset="mfr2", data_dir=data_dir), DetectingLoader(detector))
    assert len(mfr2.pairs) == 848
    assert isinstance(mfr2.load, DetectingLoader) and mfr2.load.detector == detector


def test_landmarks_dataset_reports_the_detector_error(data_dir: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for source in sorted((data_dir / "lfw" / "raw-fold1").glob("*/*.jpg"))[:6]:
        (photos / source.parent.name).mkdir(parents=True, exist_ok=True)
        (photos / source.parent.name / source.name).write_bytes(source.read_bytes())
    out = tmp_path / "lm.json"
    result = CliRunner().invoke(main, ["--dataset", "landmarks", "--bundle", str(DEMO_BUNDLE), "--data-dir",
                                       str(data_dir), "--photos", str(photos), "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["detector"] == "bundle:scrfd-500m" and report["photos"] == report["found"] == 6
    assert 0.5 < report["median_px"] < 5.0 and report["median_px_after_mean_offset"] <= report["median_px"] + 1e-9


def test_accuracy_table_merges_reports_and_shows_the_chosen_methods(tmp_path: Path) -> None:
    """tools/accuracy_table.py: a later report's methods join (and replace) an earlier one's; --methods picks
    and orders the columns; an unknown method is a one-line error."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("accuracy_table", Path(__file__).parents[2] / "tools" / "accuracy_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def result(accuracy: float, mask: float | None = None) -> dict:
        return {"accuracy": accuracy, "std": 0.5, "eer": 1.0, "tar_at_far_1e-3": 90.0, "cases": {"1": accuracy},
                "mask_accuracy": mask}

    old = {"dataset": "mfr2", "pairs": 848, "results": {"Baseline 2": result(98.8), "ours": result(98.1, 93.2)}}
    new = {"dataset": "mfr2", "pairs": 848, "results": {"Baseline 1": result(98.3), "ours": result(98.7, 97.5),
                                                          "ours (C before)": result(98.1, 93.2)}}
    paths = [tmp_path / "old.json", tmp_path / "new.json"]
    for path, document in zip(paths, (old, new)):
        path.write_text(json.dumps(document))
    run = CliRunner().invoke(module.main, [*map(str, paths), "--methods", "Baseline 1,Baseline 2,ours"])
    assert run.exit_code == 0, run.output
    assert "| mfr2 | 848 | 98.30 ± 0.50 | 98.80 ± 0.50 | 98.70 ± 0.50 | 94.5 / 96.0 / 96.4 |" in run.output
    assert "| mfr2 | -0.10 |" in run.output  # ours against Baseline 2
    assert "| mfr2 | 97.50 | 98.5 |" in run.output  # Table III from the newer report
    assert "C before" not in run.output
    other = CliRunner().invoke(module.main, [*map(str, paths), "--baseline", "Baseline 1"])
    assert other.exit_code == 0 and "Against Baseline 1" in other.output and "| mfr2 | +0.40 | -0.20 |" in other.output
    bad = CliRunner().invoke(module.main, [*map(str, paths), "--methods", "Baseline 3"])
    assert bad.exit_code != 0 and "Baseline 3 not in these reports" in bad.output
