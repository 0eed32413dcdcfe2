"""INT8 E_F and E_P for the openvino-int8 backend: NNCF post-training quantization behind an accuracy gate.

``bfm-export --update BUNDLE --int8 PAIRS``. PAIRS are labelled pairs of *training* identities (the calibration
pairs of ``bfm-export --calibrate``, e.g. LFW folds 1-5 and their masked twins). Each pair is routed by the
bundle's own classifier at its mask threshold; the first half of the file calibrates each extractor's
quantization (``CALIBRATION_FACES`` of its route's faces), the second half checks it: on that half's pairs of
the route, at the route's threshold, the INT8 graph must decide as the FP32 graph on at least ``MIN_AGREEMENT``
of them and lose at most ``MAX_ACCURACY_DROP`` of accuracy (issue 25's gate). A route that fails refuses the
whole variant (nothing is written). The report of the check goes into the manifest's ``int8.gate``.

INT8 changes decisions where FP32 does not (a score moves by up to a few hundredths), so no backend picks it by
itself: ``--backend openvino-int8`` names it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bfm_deploy.bundle import Bundle, sha256_file
from bfm_deploy.contract import CROP_SIZE, Network
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image
from bfm_deploy.manifest import Int8Graph, Int8Variant
from bfm_deploy.optional import require
from bfm_deploy.routing import mask_probability, partial_route
from bfm_deploy.tensor import l2_normalise, preprocess

from .calibrate import LabelledPair, read_labelled_pairs

MIN_AGREEMENT = 0.998  # decisions as FP32 on the check half
MAX_ACCURACY_DROP = 0.001  # accuracy lost on the check half
CALIBRATION_FACES = 300
MIN_CHECK_PAIRS = 100  # fewer: one pair would move agreement past the gate's resolution


def require_tools() -> tuple[Any, Any]:
    """OpenVINO and NNCF, or one line saying how to install them (checked before any work)."""
    return require("openvino", "int8", "--int8"), require("nncf", "int8", "--int8")


def quantize_extractors(bundle: Bundle, pairs_file: Path, log: Callable[[str], Any]) -> Int8Variant:
    """Quantize the bundle's E_F and E_P into its folder (``<route>.int8.xml/.bin``); the variant, or BfmError
    naming the route and the figure that failed the gate."""
    ov, nncf = require_tools()
    pairs = read_labelled_pairs(pairs_file)
    core = ov.Core()
    faces = _Faces(sorted({str(p) for pair in pairs for p in (pair.left, pair.right)}))
    probability = faces.mask_probabilities(core, bundle)
    half = len(pairs) // 2
    graphs: dict[str, Int8Graph] = {}
    gate: dict[str, Any] = {"min_agreement": MIN_AGREEMENT, "max_accuracy_drop": MAX_ACCURACY_DROP,
                            "openvino": str(ov.get_version()).split("-")[0], "nncf": nncf.__version__}
    network: Network
    for network in ("full", "partial"):
        tune = _routed(pairs[:half], probability, bundle.mask_threshold, network)
        check = _routed(pairs[half:], probability, bundle.mask_threshold, network)
        if len(check) < MIN_CHECK_PAIRS or not tune:
            raise BfmError(f"--int8 {pairs_file}: the classifier sends {len(tune)} + {len(check)} pairs to {network}; "
                           f"the gate needs some in the first half and >= {MIN_CHECK_PAIRS} in the second")
        calibration_paths = sorted({p for a, b, _ in tune for p in (a, b)})
        random.Random(0).shuffle(calibration_paths)
        samples = [faces.tensor([p]) for p in calibration_paths[:CALIBRATION_FACES]]
        calibration = nncf.Dataset(samples)
        model = core.read_model(str(bundle.path(network)))
        started = time.perf_counter()
        quantized = nncf.quantize(model, calibration, subset_size=len(samples))
        seconds = time.perf_counter() - started
        threshold = bundle.thresholds[network].value
        config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
        accuracy_f32, decided_f32 = _accuracy(faces, core.compile_model(model, "CPU", config), check, threshold)
        accuracy_int8, decided_int8 = _accuracy(faces, core.compile_model(quantized, "CPU", config), check, threshold)
        agreement = float((decided_f32 == decided_int8).mean())
        gate[network] = {"calibration_faces": len(samples), "check_pairs": len(check), "agreement": round(agreement, 5),
                         "accuracy_f32": round(accuracy_f32, 5), "accuracy_int8": round(accuracy_int8, 5)}
        log(f"{network} INT8 ({seconds:.0f} s): {len(check)} check pairs, decisions as FP32 {100 * agreement:.2f}%, "
            f"accuracy {100 * accuracy_f32:.2f} -> {100 * accuracy_int8:.2f}")
        if agreement < MIN_AGREEMENT or accuracy_f32 - accuracy_int8 > MAX_ACCURACY_DROP:
            raise BfmError(f"--int8: INT8 {network} fails the gate on the second half of {pairs_file.name}: decisions "
                           f"as FP32 {100 * agreement:.2f}% (needs >= {100 * MIN_AGREEMENT:.1f}%), accuracy "
                           f"{100 * accuracy_f32:.2f} -> {100 * accuracy_int8:.2f} (may lose "
                           f"{100 * MAX_ACCURACY_DROP:.1f}); the bundle is unchanged")
        xml = bundle.root / f"{network}.int8.xml"
        ov.save_model(quantized, str(xml), compress_to_fp16=False)
        weights = xml.with_suffix(".bin")
        graphs[network] = Int8Graph(xml, sha256_file(xml), weights, sha256_file(weights))
    description = (f"NNCF post-training quantization on up to {CALIBRATION_FACES} faces a route of the first half of "
                   f"{pairs_file.name} (sha256 {sha256_file(pairs_file)[:12]}), checked on its second half")
    return Int8Variant(graphs, description, gate)


class _Faces:
    """The pairs' aligned crops, read once, as the bundle's NCHW input."""

    def __init__(self, paths: list[str]) -> None:
        self.index = {p: i for i, p in enumerate(paths)}
        crops = []
        for path in paths:
            image = load_image(path)
            if image.shape[:2] != (CROP_SIZE, CROP_SIZE):
                raise BfmError(f"--int8: {path} is {image.shape[1]}x{image.shape[0]}, not an aligned crop")
            crops.append(image)
        self.batch = preprocess(crops)

    def tensor(self, paths: list[str]) -> np.ndarray:
        return self.batch[[self.index[p] for p in paths]]

    def mask_probabilities(self, core: Any, bundle: Bundle) -> dict[str, float]:
        classifier = core.compile_model(core.read_model(str(bundle.path("classifier"))), "CPU",
                                        {"INFERENCE_PRECISION_HINT": "f32"})
        probability = mask_probability(_run(classifier, self.batch))
        return {p: float(probability[i]) for p, i in self.index.items()}


def _routed(pairs: list[LabelledPair], probability: dict[str, float], mask_threshold: float, network: str
            ) -> list[tuple[str, str, bool]]:
    """The pairs the bundle's classifier sends to ``network``, as (left, right, same)."""
    rows = [(str(p.left), str(p.right), bool(p.same)) for p in pairs]
    if not rows:
        return []
    left = np.array([probability[a] for a, _, _ in rows])
    right = np.array([probability[b] for _, b, _ in rows])
    partial = partial_route(left, right, mask_threshold)
    return [row for row, goes in zip(rows, partial) if bool(goes) == (network == "partial")]


def _run(compiled: Any, batch: np.ndarray) -> np.ndarray:
    request = compiled.create_infer_request()
    return np.concatenate([np.array(request.infer({0: batch[k : k + 32]})[compiled.output(0)])
                           for k in range(0, len(batch), 32)])


def _accuracy(faces: _Faces, compiled: Any, pairs: list[tuple[str, str, bool]], threshold: float
              ) -> tuple[float, np.ndarray]:
    used = sorted({p for a, b, _ in pairs for p in (a, b)})
    where = {p: i for i, p in enumerate(used)}
    embeddings = l2_normalise(_run(compiled, faces.tensor(used)))
    a = embeddings[[where[p[0]] for p in pairs]]
    b = embeddings[[where[p[1]] for p in pairs]]
    decided = (a * b).sum(axis=1) >= threshold
    return float((decided == np.array([p[2] for p in pairs])).mean()), decided
