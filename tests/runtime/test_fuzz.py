"""Random and mutated image bytes through the decoder and the Verifier: only BfmError may come out."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bfm_deploy.errors import BfmError
from bfm_deploy.images import ImageLimits, load_image

FORMATS = (".jpg", ".png", ".bmp", ".gif", ".tiff", ".webp", ".ppm")
# Small limits keep a mutated header that still parses from asking for much memory.
LIMITS = ImageLimits(max_pixels=4_000_000, max_file_bytes=1 << 20)


def _seed_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return {ext: cv2.imencode(ext, image)[1].tobytes() for ext in FORMATS}


SEEDS = _seed_images()


def _decode(data: bytes, ext: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{ext}"
        path.write_bytes(data)
        try:
            image = load_image(path, LIMITS)
        except BfmError:
            return
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[0] * image.shape[1] <= LIMITS.max_pixels


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ext=st.sampled_from(FORMATS), data=st.binary(min_size=0, max_size=2048))
def test_random_bytes_under_any_image_name(ext: str, data: bytes) -> None:
    _decode(data, ext)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ext=st.sampled_from(FORMATS), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                     min_size=1, max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_mutated_real_images(ext: str, flips: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(SEEDS[ext])
    for position, value in flips:  # headers first: most flips land in the first bytes
        data[position % min(len(data), 64 if value % 2 else len(data))] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    _decode(bytes(data), ext)


@pytest.fixture(scope="module")
def verifier(runtime_bundle: Path):  # -> Verifier
    from bfm_deploy.verifier import Verifier

    with Verifier(runtime_bundle, backend="ort") as v:
        yield v


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(ext=st.sampled_from(FORMATS), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                     min_size=1, max_size=4))
def test_mutated_images_through_the_verifier_give_pair_errors(verifier, ext: str, flips: list[tuple[int, int]],
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    from bfm_deploy.verifier import PairError, VerifyResult

    data = bytearray(SEEDS[ext])
    for position, value in flips:
        data[position % len(data)] = value
    folder = tmp_path_factory.mktemp("fuzz")
    bad = folder / f"x{ext}"
    bad.write_bytes(bytes(data))
    (result,) = verifier.verify_many([(bad, bad)], errors="collect")
    assert isinstance(result, (PairError, VerifyResult))  # a random 24x32 picture holds no face: nearly always an error
