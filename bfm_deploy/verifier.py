"""Mask-routed face verification (the paper's inference stage, Sec. III-F) on any backend.

For a pair of faces the mask classifier C decides the case: 1 both unmasked, 2 one masked, 3 both masked.
Case 1 compares full-face embeddings E_F, cases 2 and 3 compare partial-face embeddings E_P of both faces,
each route against its own calibrated threshold. Batched: every face of a batch is classified in one call,
the pairs are split by route and E_F and E_P run on their own batches concurrently.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from .backends import BACKEND_NAMES, Backend, create_backend
from .bundle import Bundle
from .errors import BfmError
from .images import load_image
from .routing import is_masked, mask_probability
from .tensor import preprocess

if TYPE_CHECKING:
    from .detect import FaceAligner

Image = Union[str, "os.PathLike[str]", np.ndarray]
Route = Literal["full", "partial"]

CASE_NAMES = {1: "both unmasked", 2: "one masked", 3: "both masked"}


@dataclass(frozen=True)
class VerifyResult:
    same: bool
    score: float  # cosine similarity of the L2-normalised embeddings of the route
    threshold: float
    route: Route
    case: int  # 1 both unmasked, 2 one masked, 3 both masked
    mask_probability: tuple[float, float]
    note: str | None = None  # e.g. several faces found, the largest was used
    # how each face was found: "detector" (first pass), a fallback step of the bundle's chain, or "aligned"
    found_by: tuple[str, str] = ("aligned", "aligned")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mask_probability"] = list(self.mask_probability)
        data["found_by"] = list(self.found_by)
        if self.note is None:
            del data["note"]
        return data


@dataclass(frozen=True)
class EmbedResult:
    route: Route  # the extractor this face's mask state calls for
    mask_probability: float
    embedding: np.ndarray  # L2-normalised float32
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"route": self.route, "mask_probability": self.mask_probability,
                                "embedding": [round(float(v), 7) for v in self.embedding]}
        if self.note is not None:
            data["note"] = self.note
        return data


@dataclass(frozen=True)
class FaceFeatures:
    """A face as a gallery keeps it: its mask state and both extractors' L2-normalised embeddings, so that
    it can be matched on either route (``bfm_deploy.gallery``)."""

    mask_probability: float
    masked: bool
    full: np.ndarray
    partial: np.ndarray
    note: str | None = None


@dataclass(frozen=True)
class PairError:
    """Stands in for the result of a pair that could not be verified (``verify_many(errors="collect")``)."""

    message: str


@dataclass(frozen=True)
class Face:
    crop: np.ndarray  # 112x112x3 BGR uint8, aligned to the ArcFace template
    note: str | None = None
    found_by: str = "aligned"  # "detector", the fallback step that found it, or "aligned" (given as a crop)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _malformed(pair: object) -> str | None:
    """Why ``pair`` is not two images, or None when it is."""
    if isinstance(pair, (str, bytes, np.ndarray)) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
        return f"a pair must be two images (paths or arrays), got {type(pair).__name__}" + (
            f" of {len(pair)}" if isinstance(pair, (tuple, list)) else "")
    return None


def case_of(masked_a: bool, masked_b: bool) -> int:
    return 1 + int(masked_a) + int(masked_b)


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
        if isinstance(backend, str) and backend not in BACKEND_NAMES:
            raise BfmError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
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
        return [item if isinstance(item, BfmError) else Face(item.crop, item.note, item.found_by)
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

    def _tensor(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The networks' input for ``crops``: the normalised float tensor, or the uint8 crops themselves where the
        backend normalises on its device (``Backend.takes_uint8``: a quarter of the bytes to copy). Either is
        indexed by face along its first axis."""
        if self.backend.takes_uint8:
            return np.stack(crops) if len(crops) else np.zeros((0, *self.bundle.input.size, 3), np.uint8)
        return preprocess(crops, self.bundle.input.mean, self.bundle.input.std)

    def _infer(self, network: Literal["classifier", "full", "partial"], tensor: np.ndarray) -> np.ndarray:
        if tensor.dtype == np.uint8:
            return self.backend.infer_crops(network, tensor, self.bundle.input.mean, self.bundle.input.std)
        return self.backend.infer(network, tensor)

    def _infer_concurrent(self, jobs: dict[Any, np.ndarray]) -> dict[Any, np.ndarray]:
        if any(t.dtype == np.uint8 for t in jobs.values()):
            return self.backend.infer_concurrent_crops(jobs, self.bundle.input.mean, self.bundle.input.std)
        return self.backend.infer_concurrent(jobs)

    def _run(self, network: Literal["classifier", "full", "partial"], tensor: np.ndarray) -> np.ndarray:
        outputs = [self._infer(network, tensor[i : i + self.batch_size])
                   for i in range(0, len(tensor), self.batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

    # -- public API --------------------------------------------------------------------------------------

    def embed(self, images: Sequence[Image], route: Route = "full", aligned: bool = False) -> np.ndarray:
        """``N x embedding_size`` L2-normalised float32 embeddings of ``route``'s extractor."""
        if route not in ("full", "partial"):
            raise BfmError(f"route must be 'full' or 'partial', got {route!r}")
        crops = self._crops(images, aligned)
        if not crops:
            return np.zeros((0, self.bundle.embedding_size), np.float32)
        return l2_normalise(self._run(route, self._tensor(crops)))

    def mask_probability(self, images: Sequence[Image], aligned: bool = False) -> np.ndarray:
        """``N`` probabilities that each face wears a mask (softmax of the classifier)."""
        crops = self._crops(images, aligned)
        if not crops:
            return np.zeros(0, np.float32)
        return mask_probability(self._run("classifier", self._tensor(crops)))

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
        # One tensor for every face: the classifier sees all of it, each extractor its route's rows.
        tensor = self._tensor([face.crop for pair in good for face in pair])
        probs = mask_probability(self._infer("classifier", tensor)).reshape(-1, 2)
        masked = is_masked(probs, self.mask_threshold)
        cases = [case_of(bool(m[0]), bool(m[1])) for m in masked]
        routes: list[Route] = ["full" if case == 1 else "partial" for case in cases]
        jobs: dict[Any, np.ndarray] = {}
        members: dict[Route, list[int]] = {"full": [], "partial": []}
        for i, route in enumerate(routes):
            members[route].append(i)
        for route, idx in members.items():
            if idx:
                rows = np.array([[2 * i, 2 * i + 1] for i in idx]).reshape(-1)
                jobs[route] = tensor[rows]
        outputs = self._infer_concurrent(jobs)
        scores = np.zeros(len(good), np.float32)
        for route, idx in members.items():
            if idx:
                emb = l2_normalise(outputs[route]).reshape(len(idx), 2, -1)
                scores[idx] = np.einsum("nd,nd->n", emb[:, 0], emb[:, 1])
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
        tensor = self._tensor([face.crop for face in faces])
        probs = mask_probability(self._infer("classifier", tensor))
        masked = is_masked(probs, self.mask_threshold)
        routes: list[Route] = ["partial" if m else "full" for m in masked]
        members = {route: [i for i, r in enumerate(routes) if r == route] for route in ("full", "partial")}
        outputs = self._infer_concurrent({route: tensor[idx] for route, idx in members.items() if idx})
        embeddings: dict[int, np.ndarray] = {}
        for route, idx in members.items():
            if idx:
                embeddings.update(zip(idx, l2_normalise(outputs[route])))
        return [EmbedResult(route=routes[i], mask_probability=float(probs[i]), embedding=embeddings[i], note=face.note)
                for i, face in enumerate(faces)]

    def features(self, faces: Sequence[Face]) -> list[FaceFeatures]:
        """Each aligned face's mask probability and both embeddings (E_F and E_P), a batch at a time."""
        result: list[FaceFeatures] = []
        for start in range(0, len(faces), self.batch_size):
            chunk = faces[start : start + self.batch_size]
            tensor = self._tensor([face.crop for face in chunk])
            probs = mask_probability(self._infer("classifier", tensor))
            masked = is_masked(probs, self.mask_threshold)
            outputs = self._infer_concurrent({"full": tensor, "partial": tensor})
            full, partial = l2_normalise(outputs["full"]), l2_normalise(outputs["partial"])
            result.extend(FaceFeatures(float(probs[i]), bool(masked[i]), full[i], partial[i], face.note)
                          for i, face in enumerate(chunk))
        return result

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

