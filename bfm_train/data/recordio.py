"""insightface ``train.rec`` / ``train.idx`` without mxnet: the MXNet (dmlc) RecordIO format, read and written.

File layout, per record: ``uint32 magic 0xced7230a``, ``uint32 lrecord`` (top 3 bits ``cflag``, low 29 bits the
payload length), the payload, zero padding to a 4-byte boundary. A payload that contains the magic word at a
4-byte aligned offset is split there into parts (cflag 1 = first, 2 = middle, 3 = last; 0 = whole record) and the
magic word itself is dropped, so the reader puts it back between parts.

Payload: an ``IRHeader`` packed as ``'IfQQ'`` (flag, label, id, id2); when ``flag > 0`` the label is instead an
array of ``flag`` float32 right after the header. The encoded image follows. ``train.idx`` holds
``key<TAB>byte offset`` lines. In insightface sets record 0 has ``flag = 2`` and label ``[a, b]``: records
``1..a-1`` are images and records ``a..b-1`` describe identities (label ``[first image, end image)``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch.utils.data import Dataset

from bfm_deploy.errors import BfmError

from .augment import AugmentConfig, Augmenter, augmented_pair
from .folders import Item, split_item
from .images import decode_face, to_tensor

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_HEADER = struct.Struct("<IfQQ")


@dataclass(frozen=True)
class IRHeader:
    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def pack_record(header: IRHeader, payload: bytes) -> bytes:
    """IRHeader + payload as insightface packs it (a label tuple is stored after the header with flag = len)."""
    if isinstance(header.label, tuple):
        head = _HEADER.pack(len(header.label), 0.0, header.id, header.id2)
        return head + np.asarray(header.label, dtype="<f4").tobytes() + payload
    return _HEADER.pack(0, float(header.label), header.id, header.id2) + payload


def unpack_record(record: bytes) -> tuple[IRHeader, bytes]:
    if len(record) < _HEADER.size:
        raise BfmError(f"record of {len(record)} bytes is shorter than its {_HEADER.size}-byte header")
    flag, label, id_, id2 = _HEADER.unpack_from(record)
    body = record[_HEADER.size :]
    if flag > 0:
        if len(body) < 4 * flag:
            raise BfmError(f"record promises {flag} labels but has {len(body)} bytes after its header")
        labels = tuple(float(v) for v in np.frombuffer(body[: 4 * flag], dtype="<f4"))
        return IRHeader(flag, labels, id_, id2), body[4 * flag :]
    return IRHeader(flag, label, id_, id2), body


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class RecordWriter:
    """Writes ``.rec`` + ``.idx``; the files are for tests and small conversions, written in place."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self._rec = open(rec_path, "wb")
        self._idx = open(idx_path, "w")

    def write(self, key: int, record: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        # Split at 4-byte aligned occurrences of the magic word, as dmlc's writer does.
        starts = [0]
        ends = []
        for pos in range(0, len(record) - 3, 4):
            if record[pos : pos + 4] == _MAGIC_BYTES:
                ends.append(pos)
                starts.append(pos + 4)
        ends.append(len(record))
        parts = list(zip(starts, ends, strict=True))
        for number, (start, end) in enumerate(parts):
            if len(parts) == 1:
                cflag = 0
            else:
                cflag = 1 if number == 0 else (3 if number == len(parts) - 1 else 2)
            chunk = record[start:end]
            self._rec.write(struct.pack("<II", MAGIC, (cflag << 29) | len(chunk)) + chunk + _pad(len(chunk)))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_index(idx_path: str | Path) -> dict[int, int]:
    index: dict[int, int] = {}
    for number, line in enumerate(Path(idx_path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            key, offset = int(fields[0]), int(fields[1])
        except (ValueError, IndexError):
            raise BfmError(f"{idx_path}:{number}: expected 'key<TAB>offset', got {line[:60]!r}") from None
        index[key] = offset
    if not index:
        raise BfmError(f"{idx_path}: empty index")
    return index


class RecordReader:
    """Random access to records by key. Opens its file lazily so that each DataLoader worker has its own."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        idx = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file():
            raise BfmError(f"{self.rec_path}: no such record file")
        if not idx.is_file():
            raise BfmError(f"{idx}: no such index file (expected next to {self.rec_path.name})")
        self.index = read_index(idx)
        self._file: BinaryIO | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_file": None}  # file handles do not cross process boundaries

    def keys(self) -> list[int]:
        return sorted(self.index)

    def read(self, key: int) -> bytes:
        offset = self.index.get(key)
        if offset is None:
            raise BfmError(f"{self.rec_path}: no record with key {key}")
        if self._file is None:
            self._file = open(self.rec_path, "rb")
        self._file.seek(offset)
        return self._read_at(offset)

    def read_header(self, key: int) -> IRHeader:
        """The header of one record, reading only its first bytes (labels of a large file without images)."""
        offset = self.index[key]
        if self._file is None:
            self._file = open(self.rec_path, "rb")
        self._file.seek(offset + 8)
        head = self._file.read(_HEADER.size)
        flag = _HEADER.unpack(head)[0] if len(head) == _HEADER.size else 0
        return unpack_record(head + self._file.read(4 * flag))[0]

    def _read_at(self, offset: int) -> bytes:
        assert self._file is not None
        parts: list[bytes] = []
        while True:
            head = self._file.read(8)
            if len(head) < 8:
                raise BfmError(f"{self.rec_path}: truncated record at byte {offset}")
            magic, lrecord = struct.unpack("<II", head)
            if magic != MAGIC:
                raise BfmError(f"{self.rec_path}: bad magic {magic:#x} at byte {offset} (not a RecordIO file?)")
            cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
            chunk = self._file.read(length)
            if len(chunk) < length:
                raise BfmError(f"{self.rec_path}: truncated record at byte {offset}")
            self._file.read(-length % 4)
            parts.append(chunk)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)
            if cflag not in (1, 2):
                raise BfmError(f"{self.rec_path}: bad continuation flag {cflag} at byte {offset}")

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        for key in self.keys():
            yield key, self.read(key)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _int_label(header: IRHeader) -> int:
    label = header.label[0] if isinstance(header.label, tuple) else header.label
    return int(label)


class RecordDataset(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """insightface ``train.rec``: yields ``(x, x_hat, y)`` like ``PairedFolderDataset``.

    ``masked_rec`` is an optional second record file holding the masked twin of each image under the same key.
    Labels are remapped to ``0..M-1`` in sorted order of the stored labels.
    """

    def __init__(self, rec_path: str | Path, masked_rec: str | Path | None = None,
                 augment: AugmentConfig | None = None) -> None:
        self.augmenter = Augmenter(augment) if augment is not None and augment.enabled else None
        self.reader = RecordReader(rec_path)
        self.masked = None if masked_rec is None else RecordReader(masked_rec)
        keys = self.reader.keys()
        first_header, _ = unpack_record(self.reader.read(keys[0]))
        if keys[0] == 0 and first_header.flag > 0 and isinstance(first_header.label, tuple):
            # insightface layout: record 0 holds [first identity record, end of identity records]; each identity
            # record holds [first image, end image), so labels come without reading every image header.
            first_id, end_id = (int(v) for v in first_header.label[:2])
            self.keys: list[int] = []
            labels: list[int] = []
            for label, id_key in enumerate(range(first_id, end_id)):
                header, _ = unpack_record(self.reader.read(id_key))
                start, end = (int(v) for v in header.label[:2]) if isinstance(header.label, tuple) else (0, 0)
                self.keys.extend(range(start, end))
                labels.extend([label] * (end - start))
            if not self.keys:
                raise BfmError(f"{self.reader.rec_path}: identity records list no images")
        else:
            self.keys = keys
            labels = [_int_label(self.reader.read_header(k)) for k in self.keys]
        self.reader.close()
        classes = sorted(set(labels))
        remap = {c: i for i, c in enumerate(classes)}
        self.labels = [remap[c] for c in labels]
        self.num_classes = len(classes)
        if self.masked is not None:
            missing = [k for k in self.keys if k not in self.masked.index]
            if missing:
                raise BfmError(f"{self.masked.rec_path}: no masked twin for {len(missing)} keys, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.keys)

    def _image(self, reader: RecordReader, key: int) -> np.ndarray:
        _, payload = unpack_record(reader.read(key))
        return decode_face(payload, f"{reader.rec_path}#{key}")

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, flip, seed = split_item(item)
        key = self.keys[index]
        face, twin = augmented_pair(self.augmenter, seed, self._image(self.reader, key),
                                    None if self.masked is None else self._image(self.masked, key))
        x = to_tensor(face, flip)
        x_hat = torch.empty(0) if twin is None else to_tensor(twin, flip)
        return x, x_hat, self.labels[index]
