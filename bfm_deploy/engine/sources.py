"""The ONNX side of a bundle as the engine builder and the trt backend need it.

``bfm_deploy.bundle.Bundle`` validates the manifest and checks every ONNX file against its sha256, so the
hashes recorded here (and compared against engine manifests) are those of the files on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..contract import NETWORKS
from ..bundle import Bundle

BundleLike = Union[Bundle, str, "os.PathLike[str]"]


@dataclass(frozen=True)
class NetworkSource:
    network: str
    onnx: Path
    input: str
    output: str
    sha256: str
    chw: tuple[int, int, int] | None = None  # input shape without the batch axis; None: the bundle's crop size
    outputs: tuple[str, ...] = ()  # every output of a multi-output graph (the detector)


# The detector sees at most one Verifier chunk of photos at a time, in NetworkDetector batches of up to 32.
DETECTOR_MAX_BATCH = 32


def load_bundle(bundle: BundleLike) -> Bundle:
    """A validated ``Bundle`` (files checked against their sha256) from a Bundle or a bundle folder."""
    return bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, verify_files=True)


def read_sources(bundle: BundleLike) -> dict[str, NetworkSource]:
    """{network: NetworkSource} for classifier, full, partial and, where the bundle has one, ``detector``."""
    loaded = load_bundle(bundle)
    sources: dict[str, NetworkSource] = {
        network: NetworkSource(
            network=network,
            onnx=entry.file,
            input=entry.input_name,
            output=entry.output_name,
            sha256=entry.sha256,
        )
        for network, entry in ((n, loaded.models[n]) for n in NETWORKS)
    }
    spec = loaded.detector
    if spec is not None:
        sources["detector"] = NetworkSource(
            network="detector", onnx=spec.file, input=spec.input_name, output=spec.output_names[0],
            sha256=spec.sha256, chw=(3, spec.input_size, spec.input_size), outputs=spec.output_names,
        )
    return sources


def read_input_chw(bundle: BundleLike) -> tuple[int, int, int]:
    """(3, H, W): the networks take RGB NCHW crops of the bundle's input size."""
    height, width = load_bundle(bundle).input.size
    return (3, height, width)
