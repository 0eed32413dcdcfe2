"""Training data: identity folders paired with their masked twins, insightface RecordIO, resumable sampling."""

from .folders import PairedFolderDataset, scan_identities
from .images import load_face, to_tensor
from .recordio import IRHeader, RecordDataset, RecordReader, RecordWriter, pack_record, unpack_record
from .sampler import ResumableSampler

__all__ = [
    "IRHeader",
    "PairedFolderDataset",
    "RecordDataset",
    "RecordReader",
    "RecordWriter",
    "ResumableSampler",
    "load_face",
    "pack_record",
    "scan_identities",
    "to_tensor",
    "unpack_record",
]
