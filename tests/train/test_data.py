"""Training data: paired identity folders, the RecordIO reader/writer, the resumable sampler."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bfm_deploy.errors import BfmError
from bfm_train.data import (
    IRHeader,
    PairedFolderDataset,
    RecordDataset,
    RecordReader,
    RecordWriter,
    ResumableSampler,
    pack_record,
    scan_identities,
    unpack_record,
)
from bfm_train.data.recordio import MAGIC

def imread(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


IDENTITIES = {"Colin_Powell": 4, "Tony_Blair": 3, "Hugo_Chavez": 2, "Ariel_Sharon": 1}


@pytest.fixture(scope="module")
def faces(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A few real LFW identities and a fake masked twin (lower half black) with .png extensions."""
    root = tmp_path_factory.mktemp("faces")
    plain, masked = root / "plain", root / "masked"
    for name, count in IDENTITIES.items():
        (plain / name).mkdir(parents=True)
        (masked / name).mkdir(parents=True)
        for src in sorted((data_dir / "lfw" / "aligned112" / name).iterdir())[:count]:
            shutil.copy(src, plain / name / src.name)
            image = imread(src)
            image[56:] = 0
            cv2.imwrite(str(masked / name / (src.stem + ".png")), image)  # lossless, so halves compare exactly
    return plain, masked


def test_scan_filters_and_sorted_labels(faces: tuple[Path, Path]) -> None:
    plain, _ = faces
    assert list(scan_identities(plain)) == sorted(IDENTITIES)
    assert list(scan_identities(plain, min_images=3)) == ["Colin_Powell", "Tony_Blair"]
    assert list(scan_identities(plain, exclude={"Colin_Powell"})) == ["Ariel_Sharon", "Hugo_Chavez", "Tony_Blair"]
    assert list(scan_identities(plain, include=["Tony_Blair", "Hugo_Chavez"])) == ["Hugo_Chavez", "Tony_Blair"]
    with pytest.raises(BfmError, match="not in"):
        scan_identities(plain, include=["Nobody_Here"])
    with pytest.raises(BfmError, match="no identity folder"):
        scan_identities(plain, min_images=50)


def test_paired_items_follow_tensor_contract(faces: tuple[Path, Path]) -> None:
    plain, masked = faces
    ds = PairedFolderDataset(plain, masked, min_images=2)
    assert ds.identities == ["Colin_Powell", "Hugo_Chavez", "Tony_Blair"] and ds.num_classes == 3
    assert len(ds) == 4 + 2 + 3
    x, x_hat, y = ds[0]
    assert x.shape == x_hat.shape == (3, 112, 112) and x.dtype == torch.float32 and y == 0
    # RGB order and (x - 127.5) / 127.5, checked against OpenCV's BGR decode of the same file
    bgr = imread(plain / ds.samples[0].relpath).astype(np.float32)
    np.testing.assert_allclose(x.numpy(), (bgr[:, :, ::-1].transpose(2, 0, 1) - 127.5) / 127.5, atol=1e-6)
    # the masked twin is the same face with a black lower half: upper halves agree, lower half is -1
    assert torch.equal(x[:, :56], x_hat[:, :56]) and bool((x_hat[:, 56:] == -1).all())
    # a flip mirrors both images the same way
    fx, fx_hat, fy = ds[(0, True)]
    assert torch.equal(fx, x.flip(-1)) and torch.equal(fx_hat, x_hat.flip(-1)) and fy == y


def test_missing_twin_skip_or_error(faces: tuple[Path, Path], tmp_path: Path) -> None:
    plain, masked = faces
    partial = tmp_path / "masked"
    shutil.copytree(masked, partial)
    next((partial / "Colin_Powell").iterdir()).unlink()
    ds = PairedFolderDataset(plain, partial)
    assert ds.skipped == 1 and len(ds) == sum(IDENTITIES.values()) - 1
    with pytest.raises(BfmError, match="no masked twin"):
        PairedFolderDataset(plain, partial, missing_masked="error")
    # without a masked root the twin is an empty tensor (baseline 1 needs none)
    _, x_hat, _ = PairedFolderDataset(plain)[0]
    assert x_hat.numel() == 0


def test_unaligned_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "1.jpg"), np.zeros((250, 250, 3), np.uint8))
    with pytest.raises(BfmError, match="112x112"):
        PairedFolderDataset(tmp_path)[0]


def _write_insightface_rec(prefix: Path, images: list[tuple[bytes, int]]) -> None:
    """The insightface layout: record 0 = [first identity record, end], images, then one record per identity."""
    labels = sorted({label for _, label in images})
    first_id = len(images) + 1
    with RecordWriter(prefix.with_suffix(".rec"), prefix.with_suffix(".idx")) as writer:
        writer.write(0, pack_record(IRHeader(2, (float(first_id), float(first_id + len(labels))), 0, 0), b""))
        for key, (payload, label) in enumerate(images, start=1):
            writer.write(key, pack_record(IRHeader(0, float(label), key, 0), payload))
        start = 1
        for offset, label in enumerate(labels):
            count = sum(1 for _, lab in images if lab == label)
            writer.write(first_id + offset, pack_record(IRHeader(2, (float(start), float(start + count)), 0, 0), b""))
            start += count


def test_recordio_round_trip_insightface_layout(faces: tuple[Path, Path], tmp_path: Path) -> None:
    plain, masked = faces
    folder = PairedFolderDataset(plain, masked)
    files = [(plain / s.relpath, s.masked, s.label) for s in folder.samples if s.masked is not None]
    _write_insightface_rec(tmp_path / "train", [(p.read_bytes(), 10 + label) for p, _, label in files])
    _write_insightface_rec(tmp_path / "masked", [(m.read_bytes(), 10 + label) for _, m, label in files])
    ds = RecordDataset(tmp_path / "train.rec", tmp_path / "masked.rec")
    assert len(ds) == len(folder) and ds.num_classes == folder.num_classes
    for index in (0, 5, len(ds) - 1):
        x, x_hat, y = ds[(index, True)]
        fx, fx_hat, fy = folder[(index, True)]
        assert y == fy and torch.equal(x, fx) and torch.equal(x_hat, fx_hat)


def test_recordio_splits_payloads_containing_the_magic_word(tmp_path: Path) -> None:
    magic = struct.pack("<I", MAGIC)
    payloads = [b"", b"abc", magic, b"12345678" + magic + b"xy" + magic + magic, b"x" + magic + b"yzw"]
    with RecordWriter(tmp_path / "t.rec", tmp_path / "t.idx") as writer:
        for key, payload in enumerate(payloads):
            writer.write(key, pack_record(IRHeader(0, float(key), key, 7), payload))
    raw = (tmp_path / "t.rec").read_bytes()
    assert len(raw) % 4 == 0
    # the aligned magic inside record 3 was split out: continuation flags appear in the stream
    flags = {struct.unpack_from("<I", raw, pos + 4)[0] >> 29 for pos in range(0, len(raw), 4) if raw[pos : pos + 4] == magic}
    assert {1, 3} <= flags
    reader = RecordReader(tmp_path / "t.rec")
    for key, payload in enumerate(payloads):
        header, body = unpack_record(reader.read(key))
        assert body == payload and header == IRHeader(0, float(key), key, 7)
    # header-only reads of a record with a label array
    header, _ = unpack_record(pack_record(IRHeader(3, (1.0, 2.0, 3.0), 5, 6), b"img"))
    assert header.label == (1.0, 2.0, 3.0) and header.flag == 3


def test_recordio_bad_input(tmp_path: Path) -> None:
    (tmp_path / "t.rec").write_bytes(b"\0" * 32)
    (tmp_path / "t.idx").write_text("0\t0\n")
    with pytest.raises(BfmError, match="bad magic"):
        RecordReader(tmp_path / "t.rec").read(0)
    (tmp_path / "t.idx").write_text("zero 0\n")
    with pytest.raises(BfmError, match="key<TAB>offset"):
        RecordReader(tmp_path / "t.rec")
    with pytest.raises(BfmError, match="no such index"):
        RecordReader(tmp_path / "t.rec", tmp_path / "other.idx")


def test_sampler_depends_on_seed_and_epoch_and_resumes_mid_epoch() -> None:
    data = list(range(23))

    def items(epoch: int, start: int = 0, rank: int = 0, replicas: int = 1, seed: int = 0) -> list[tuple[int, bool]]:
        sampler = ResumableSampler(data, num_replicas=replicas, rank=rank, seed=seed, batch_size=4)
        sampler.set_epoch(epoch, start_batch=start)
        out = list(sampler)
        assert len(out) == len(sampler)
        return [(index, flip) for index, flip, _ in out]

    def seeds(epoch: int, rank: int = 0, replicas: int = 1) -> dict[int, int]:
        sampler = ResumableSampler(data, num_replicas=replicas, rank=rank, seed=0, batch_size=4)
        sampler.set_epoch(epoch)
        return {index: seed for index, _, seed in sampler}

    e0 = items(0)
    assert len(e0) == 20 and e0 == items(0)  # 5 whole batches, deterministic
    assert e0 != items(1) and e0 != items(0, seed=1)
    assert items(0, start=2) == e0[8:]
    assert len({flip for _, flip in e0}) == 2  # both flips occur
    r0, r1 = items(3, rank=0, replicas=2), items(3, rank=1, replicas=2)
    assert len(r0) == len(r1) == 8 and not {i for i, _ in r0} & {i for i, _ in r1}
    # the flip of a sample depends on the sample and epoch, not on which rank draws it
    flips = dict(items(3))
    assert all(flips.get(i, f) == f for i, f in r0 + r1)
    # so does each sample's augmentation seed; it changes with the epoch
    everyone = seeds(3)
    assert all(everyone.get(i, s) == s for i, s in {**seeds(3, 0, 2), **seeds(3, 1, 2)}.items())
    assert len(set(everyone.values())) == len(everyone) and seeds(4) != everyone


def test_augmentation_is_seeded_shares_geometry_and_moves_the_face(data_dir: Path) -> None:
    from bfm_train.data import load_face
    from bfm_train.data.augment import AugmentConfig, Augmenter, augmented_pair

    face = load_face(sorted((data_dir / "lfw" / "aligned112").glob("*/*.jpg"))[0])
    twin = face.copy()
    twin[70:, :] = 200  # a crude "mask": any second image to pair with
    augmenter = Augmenter(AugmentConfig(landmark_noise=3.0, blur=0.5, jpeg=0.5, noise=0.5, light=0.5))
    a1, b1 = augmented_pair(augmenter, 123, face, twin)
    a2, b2 = augmented_pair(augmenter, 123, face, twin)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)  # the seed fixes every pixel
    a3, _ = augmented_pair(augmenter, 124, face, twin)
    assert not np.array_equal(a1, a3)
    assert a1.shape == face.shape and a1.dtype == np.uint8
    # Same geometry for both: with only the warp on, the twin's untouched top rows move like the face's.
    geometric = Augmenter(AugmentConfig(landmark_noise=3.0))
    g_face, g_twin = augmented_pair(geometric, 7, face, twin)
    assert not np.array_equal(g_face, face)
    assert np.abs(g_face[:50].astype(int) - g_twin[:50]).mean() < 1.0
    # Off by default: the clean crop is returned untouched.
    assert augmented_pair(None, 7, face, twin)[0] is face
    with pytest.raises(BfmError, match="augment.blur is a probability"):
        AugmentConfig(blur=2.0)


def test_mask_restyle_changes_only_the_mask_and_is_seeded(data_dir: Path) -> None:
    """augment.mask_restyle: a real masked twin (bfm-mask's renderer) gets a new look inside its mask only,
    fixed by the seed, different between seeds; turning it on leaves the other effects' draws as they were."""
    from bfm_train.masking import MaskConfig, Masker
    from bfm_train.data import load_face
    from bfm_train.data.augment import AugmentConfig, Augmenter, augmented_pair, mask_region, restyle_mask

    path = sorted((data_dir / "lfw" / "aligned112").glob("A*/*.jpg"))[0]
    face = load_face(path)
    twin = Masker(MaskConfig(types=("surgical",), straps=False)).apply(face, aligned=True, rel_key="t").image
    region = mask_region(face, twin)
    assert 0.15 < region.mean() < 0.6  # the mask, not the whole crop and not specks
    assert region[:40].sum() == 0  # the eyes and forehead are no part of it
    looks = [restyle_mask(face, twin, np.random.default_rng(seed)) for seed in range(6)]
    assert np.array_equal(looks[0], restyle_mask(face, twin, np.random.default_rng(0)))
    inside, outside = region > 0, cv2.dilate(region, np.ones((5, 5), np.uint8)) == 0
    for look in looks:
        assert look.shape == twin.shape and look.dtype == np.uint8
        assert np.array_equal(look[outside], twin[outside])  # the face around the mask is untouched
        assert np.abs(look[inside].astype(int) - twin[inside]).mean() > 10  # the mask itself looks new
    assert len({look.tobytes() for look in looks}) == 6
    assert restyle_mask(face, face.copy(), np.random.default_rng(0)) is not None  # no mask: returned as it is
    assert np.array_equal(restyle_mask(face, face.copy(), np.random.default_rng(0)), face)
    # The restyle draws from a stream of its own: the unmasked face's effects are the same with it on or off.
    plain = Augmenter(AugmentConfig(landmark_noise=2.0, light=0.5))
    restyled = Augmenter(AugmentConfig(landmark_noise=2.0, light=0.5, mask_restyle=1.0))
    (a_plain, b_plain), (a_new, b_new) = augmented_pair(plain, 5, face, twin), augmented_pair(restyled, 5, face, twin)
    assert np.array_equal(a_plain, a_new) and not np.array_equal(b_plain, b_new)
    with pytest.raises(BfmError, match="augment.mask_restyle is a probability"):
        AugmentConfig(mask_restyle=1.5)
    # restyle_fabrics: the fabric photos join the looks, loaded once, in the process that restyles.
    with_fabrics = Augmenter(AugmentConfig(mask_restyle=1.0, restyle_fabrics=str(data_dir / "masktheface" / "textures")))
    assert with_fabrics._fabrics is None and with_fabrics.fabrics is with_fabrics.fabrics is not None
    fabric_seeds = [s for s in range(40) if np.random.default_rng(s).integers(4) == 3][:4]  # the fabric kind
    for s in fabric_seeds:
        fabric_look = restyle_mask(face, twin, np.random.default_rng(s), with_fabrics.fabrics)
        assert np.array_equal(fabric_look[outside], twin[outside])
        assert not np.array_equal(fabric_look, restyle_mask(face, twin, np.random.default_rng(s)))
    # augment.colour: grey or another hue, seeded; the luminance (the face's shape) stays.
    coloured = Augmenter(AugmentConfig(colour=1.0))
    outs = [augmented_pair(coloured, seed, face, twin)[0] for seed in range(16)]
    assert np.array_equal(outs[0], augmented_pair(coloured, 0, face, twin)[0])
    assert any(np.array_equal(o[..., 0], o[..., 2]) for o in outs)  # some turned grey
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(float)
    for out in outs:
        assert not np.array_equal(out, face)
        assert np.corrcoef(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).astype(float).ravel(), grey.ravel())[0, 1] > 0.9


def test_occluder_covers_part_of_the_lower_face_only_and_is_seeded(data_dir: Path) -> None:
    """augment.occluder: an unmasked face gets one object below the nose, far smaller than a mask, fixed by the
    seed; the masked twin and the other effects' draws are untouched. augment.dark darkens both classes."""
    from bfm_train.masking import MaskConfig, Masker
    from bfm_train.data import load_face
    from bfm_train.data.augment import AugmentConfig, Augmenter, augmented_pair, mask_region, occlude

    face = load_face(sorted((data_dir / "lfw" / "aligned112").glob("A*/*.jpg"))[0])
    twin = Masker(MaskConfig(types=("surgical",), straps=False)).apply(face, aligned=True, rel_key="t").image
    mask_share = mask_region(face, twin).mean()
    looks = [occlude(face, np.random.default_rng(seed)) for seed in range(24)]
    assert np.array_equal(looks[0], occlude(face, np.random.default_rng(0)))
    assert len({look.tobytes() for look in looks}) == 24
    for look in looks:
        assert look.shape == face.shape and look.dtype == np.uint8
        changed = np.abs(look.astype(int) - face).max(axis=2) > 0
        assert changed.any()
        assert not changed[:60].any()  # eyes and nose bridge untouched
        assert changed.mean() < mask_share / 2  # an object, not a mask
    # Its own stream: turning it on changes the unmasked face only, and leaves the other effects' draws.
    plain = Augmenter(AugmentConfig(landmark_noise=2.0, light=0.5))
    occluded = Augmenter(AugmentConfig(landmark_noise=2.0, light=0.5, occluder=1.0))
    (a_plain, b_plain), (a_new, b_new) = augmented_pair(plain, 5, face, twin), augmented_pair(occluded, 5, face, twin)
    assert np.array_equal(b_plain, b_new) and not np.array_equal(a_plain, a_new)
    assert Augmenter(AugmentConfig(occluder=1.0)).config.enabled
    with pytest.raises(BfmError, match="augment.occluder is a probability"):
        AugmentConfig(occluder=-0.1)
    dark = Augmenter(AugmentConfig(dark=1.0))
    dark_face, dark_twin = augmented_pair(dark, 3, face, twin)
    assert np.array_equal(dark_face, augmented_pair(dark, 3, face, twin)[0])
    assert dark_face.mean() < 0.75 * face.mean() and dark_twin.mean() < 0.75 * twin.mean()


def test_training_tensors_are_the_runtimes(data_dir: Path, mbf_bundle: Path) -> None:
    """One decoding and preprocessing path: what E_P trains on is bit for bit what the runtime feeds it, for
    real aligned faces (JPEG), from files and from record payloads, plain and mirrored."""
    from bfm_deploy.verifier import Verifier
    from bfm_train.data import load_face, to_tensor
    from bfm_train.data.images import decode_face

    paths = sorted((data_dir / "lfw" / "aligned112").glob("A*/*.jpg"))[:24]
    with Verifier(mbf_bundle, backend="ort") as verifier:
        runtime = verifier.pipeline.tensor(verifier._crops(paths, aligned=True))
        mirrored = verifier.pipeline.tensor([crop[:, ::-1] for crop in verifier._crops(paths, aligned=True)])
    for i, path in enumerate(paths):
        assert np.array_equal(to_tensor(load_face(path)).numpy(), runtime[i]), path
        assert np.array_equal(to_tensor(decode_face(path.read_bytes(), str(path))).numpy(), runtime[i]), path
        assert np.array_equal(to_tensor(load_face(path), flip=True).numpy(), mirrored[i]), path
    with pytest.raises(BfmError, match="empty"):
        decode_face(b"", "record#3")
    with pytest.raises(BfmError, match="record#4: expected a 112x112 aligned crop, got 120x112"):
        decode_face(cv2.imencode(".png", np.zeros((112, 120, 3), np.uint8))[1].tobytes(), "record#4")
