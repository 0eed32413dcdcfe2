"""Mask-routed face verification (the paper's inference stage, Sec. III-F) on any backend.

For a pair of faces the mask classifier C decides the case: 1 both unmasked, 2 one masked, 3 both masked.
Case 1 compares full-face embeddings E_F, cases 2 and 3 compare partial-face embeddings E_P of both faces,
each route against its own calibrated threshold. Batched: every face of a batch is classified in one call,
the pairs are split by route and E_F and E_P run on their own batches concurrently.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from .backends import BACKENDS, Backend, create_backend
from .bundle import Bundle
from .errors import BfmError
from .images import load_image
from .pipeline import RoutedPipeline
from .results import EmbedResult, Face, FaceFeatures, PairError, VerifyResult
from .routing import CASE_NAMES, Route, mask_probability
from .tensor import l2_normalise

if TYPE_CHECKING:
    from .detect import FaceAligner

Image = Union[str, "os.PathLike[str]", np.ndarray]

# The result types and helpers live beside the rule and the numbers they come from; named here for callers.
__all__ = ["CASE_NAMES", "EmbedResult", "Face", "FaceFeatures", "Image", "PairError", "Route", "Verifier",
           "VerifyResult", "l2_normalise"]


def _malformed(pair: object) -> str | None:
    """Why ``pair`` is not two images, or None when it is."""
    if isinstance(pair, (str, bytes, np.ndarray)) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
        return f"a pair must be two images (paths or arrays), got {type(pair).__name__}" + (
            f" of {len(pair)}" if isinstance(pair, (tuple, list)) else "")
    return None


class Verifier:
    """Verify face pairs with a bundle::

        with Verifier("engines/demo") as v:
            result = v.verify("a.jpg", "b.jpg")      # detects and aligns both faces
            result.same, result.score, result.route, result.case

    ``backend`` is a name (``auto``, ``ort``, ``trt``, ``torch``; created on first use) or a ready ``Backend``;
    ``batch_size`` is the largest batch any network sees.
    """

    def __init__(self, bundle: Bundle | str | os.PathLike[str], backend: str | Backend = "auto",
                 batch_size: int = 64, mask_threshold: float | None = None, detector: str = "auto") -> None:
        from .detect.choice import check_choice

        if batch_size < 2:
            raise BfmError(f"batch_size must be at least 2 (one pair), got {batch_size}")
        if mask_threshold is not None and not 0.0 < mask_threshold < 1.0:
            raise BfmError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
        if isinstance(backend, str):
            BACKENDS.get(backend)  # an unknown name fails here, before the bundle is read
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.detector_choice = check_choice(detector)
        self._owns_backend = not isinstance(backend, Backend)
        self._backend_choice = backend
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self.batch_size = batch_size
        # None: the bundle's calibrated threshold (0.5 for bundles that have none)
        self.mask_threshold = self.bundle.mask_threshold if mask_threshold is None else mask_threshold
        self._aligner: FaceAligner | None = None

    @property
    def backend(self) -> Backend:
        """Created on first use, so that bad input is reported before seconds of model loading."""
        if self._backend is None:
            assert isinstance(self._backend_choice, str)
            self._backend = create_backend(self._backend_choice, self.bundle)
        return self._backend

    @property
    def aligner(self) -> FaceAligner:
        """The detector and aligner, created on first use (only photos that need detection pay for it)."""
        if self._aligner is None:
            from .detect import open_aligner

            # the bundle's detector runs on the verifier's backend; open_detector ignores it for the others
            self._aligner = open_aligner(self.detector_choice, self.bundle, self.backend)
        return self._aligner

    @property
    def detector_name(self) -> str:
        return self.aligner.detector.name

    # -- faces -------------------------------------------------------------------------------------------

    def prepare(self, image: Image, aligned: bool = False) -> Face:
        """Decode ``image`` and return its aligned 112x112 crop (detecting the face unless ``aligned``)."""
        (face,) = self.prepare_many([image], aligned)
        if isinstance(face, BfmError):
            raise face
        return face

    def prepare_many(self, images: Sequence[Image], aligned: bool = False) -> list[Face | BfmError]:
        """Each image's aligned crop, or the ``BfmError`` that stopped it (unreadable, no face) in its place.

        Photos are decoded and aligned on a thread pool and detected in one batch."""
        if aligned:
            return [self._aligned(image) for image in images]
        return [item if isinstance(item, BfmError) else Face(item.crop, item.note, item.found_by, item.face)
                for item in self.aligner.align_many(images)]

    def _aligned(self, image: Image) -> Face | BfmError:
        try:
            bgr = load_image(image)
        except BfmError as exc:
            return exc
        height, width = self.bundle.input.size
        if bgr.shape[:2] != (height, width):
            name = "array" if isinstance(image, np.ndarray) else str(image)
            return BfmError(f"{name}: an aligned face must be {width}x{height}, got {bgr.shape[1]}x{bgr.shape[0]} "
                            "(drop --aligned to detect and align it)")
        return Face(bgr)

    def _crops(self, images: Sequence[Image], aligned: bool) -> list[np.ndarray]:
        crops = []
        for face in self.prepare_many(images, aligned):
            if isinstance(face, BfmError):
                raise face
            crops.append(face.crop)
        return crops

    @property
    def pipeline(self) -> RoutedPipeline:
        """The routed pipeline on this verifier's backend, batch size and mask threshold (made per call: cheap,
        and never stale when ``mask_threshold`` is changed)."""
        return RoutedPipeline(self.bundle, self.backend, self.batch_size, self.mask_threshold)

    # -- public API --------------------------------------------------------------------------------------

    def embed(self, images: Sequence[Image], route: Route = "full", aligned: bool = False) -> np.ndarray:
        """``N x embedding_size`` L2-normalised float32 embeddings of ``route``'s extractor."""
        if route not in ("full", "partial"):
            raise BfmError(f"route must be 'full' or 'partial', got {route!r}")
        crops = self._crops(images, aligned)
        if not crops:
            return np.zeros((0, self.bundle.embedding_size), np.float32)
        pipeline = self.pipeline
        return l2_normalise(pipeline.run(route, pipeline.tensor(crops)))

    def mask_probability(self, images: Sequence[Image], aligned: bool = False) -> np.ndarray:
        """``N`` probabilities that each face wears a mask (softmax of the classifier)."""
        crops = self._crops(images, aligned)
        if not crops:
            return np.zeros(0, np.float32)
        pipeline = self.pipeline
        return mask_probability(pipeline.run("classifier", pipeline.tensor(crops)))

    def verify(self, a: Image, b: Image, aligned: bool = False) -> VerifyResult:
        (result,) = self.verify_many([(a, b)], aligned=aligned)
        assert isinstance(result, VerifyResult)  # errors="raise"
        return result

    def verify_many(self, pairs: Iterable[tuple[Image, Image]], aligned: bool = False,
                    errors: Literal["raise", "collect"] = "raise") -> Iterator[VerifyResult | PairError]:
        """Verify pairs in batches, yielding one result per pair in order.

        With ``errors="collect"`` a pair whose images cannot be read or hold no face yields a ``PairError``
        instead of stopping the run.
        """
        if errors not in ("raise", "collect"):
            raise BfmError(f"errors must be 'raise' or 'collect', got {errors!r}")
        chunk: list[tuple[Image, Image]] = []
        pairs_per_batch = self.batch_size // 2  # both faces of a pair go through the classifier together
        for pair in pairs:
            chunk.append(pair)
            if len(chunk) == pairs_per_batch:
                yield from self._verify_chunk(chunk, aligned, errors)
                chunk = []
        if chunk:
            yield from self._verify_chunk(chunk, aligned, errors)

    def _verify_chunk(self, chunk: list[tuple[Image, Image]], aligned: bool,
                      errors: str) -> list[VerifyResult | PairError]:
        malformed: dict[int, str] = {}
        for i, pair in enumerate(chunk):
            problem = _malformed(pair)
            if problem is not None:
                malformed[i] = problem
        if malformed and errors == "raise":
            raise BfmError(next(iter(malformed.values())))
        wellformed = [pair for i, pair in enumerate(chunk) if i not in malformed]
        faces = iter(self.prepare_many([image for pair in wellformed for image in pair], aligned))
        prepared: list[tuple[Face, Face] | PairError] = []
        for i in range(len(chunk)):
            if i in malformed:
                prepared.append(PairError(malformed[i]))
                continue
            a, b = next(faces), next(faces)
            if isinstance(a, BfmError) or isinstance(b, BfmError):
                error = a if isinstance(a, BfmError) else b
                assert isinstance(error, BfmError)
                if errors == "raise":
                    raise error
                prepared.append(PairError(str(error)))
            else:
                prepared.append((a, b))
        good = [p for p in prepared if not isinstance(p, PairError)]
        scored = iter(self.score_pairs(good))
        return [item if isinstance(item, PairError) else next(scored) for item in prepared]

    def score_pairs(self, good: Sequence[tuple[Face, Face]]) -> list[VerifyResult]:
        """Verify pairs of aligned faces in one batch: every face through the classifier in one call, then each
        pair's route through its extractor, E_F and E_P concurrently (``Backend.infer_concurrent``). The
        service batches the pairs of concurrent requests through here."""
        if not good:
            return []
        outputs = self.pipeline.pairs([face.crop for pair in good for face in pair])
        probs, cases, routes, scores = outputs.probabilities, outputs.cases, outputs.routes, outputs.scores
        results: list[VerifyResult] = []
        for k, pair in enumerate(good):
            route = routes[k]
            threshold = self.bundle.threshold(route)
            score = float(scores[k])
            notes = [face.note for face in pair if face.note]
            results.append(VerifyResult(
                same=score >= threshold, score=score, threshold=threshold, route=route, case=cases[k],
                mask_probability=(float(probs[k, 0]), float(probs[k, 1])),
                note="; ".join(notes) or None, found_by=(pair[0].found_by, pair[1].found_by),
            ))
        return results

    def embed_faces(self, faces: Sequence[Face]) -> list[EmbedResult]:
        """Each aligned face's embedding from the extractor its own mask state needs (E_P when masked), with its
        mask probability: what a gallery stores and what a balanced 1:N match compares."""
        if not faces:
            return []
        outputs = self.pipeline.faces([face.crop for face in faces])
        return [EmbedResult(route=outputs.routes[i], mask_probability=float(outputs.probabilities[i]),
                            embedding=outputs.embeddings[i], note=face.note) for i, face in enumerate(faces)]

    def features(self, faces: Sequence[Face]) -> list[FaceFeatures]:
        """Each aligned face's mask probability and both embeddings (E_F and E_P), a batch at a time."""
        both = self.pipeline.both([face.crop for face in faces])
        return [FaceFeatures(float(both.probabilities[i]), bool(both.masked[i]), both.full[i], both.partial[i], face.note)
                for i, face in enumerate(faces)]

    def close(self) -> None:
        if self._aligner is not None:
            self._aligner.close()
            self._aligner = None
        if self._owns_backend and self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

