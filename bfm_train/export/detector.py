"""Putting a detector into a bundle: ``detector.onnx`` and its manifest entry, checked before it is kept.

``bfm-export --detector`` calls ``install_detector`` while it writes a new bundle, ``bfm-export --update
BUNDLE --detector`` (``bfm_train.export.update``) when it changes an existing one. Only graph detectors can live
in a bundle (SCRFD); YuNet and MTCNN run on the host and are chosen at run time with ``--detector``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from bfm_deploy.contract import sha256_file
from bfm_deploy.detect import scrfd
from bfm_deploy.detect.choice import scrfd_spec
from bfm_deploy.detect.fallback import FallbackStep
from bfm_deploy.detect.network import NetworkDetector, OnnxRunner
from bfm_deploy.detect.spec import DetectorSpec
from bfm_deploy.errors import BfmError
from bfm_deploy.onnx_graph import read_graph

DETECTOR_FILE = "detector.onnx"


def install_detector(folder: Path, choice: str, input_size: int = scrfd.DEFAULT_INPUT_SIZE,
                     fallback: tuple[FallbackStep, ...] = ()) -> DetectorSpec:
    """Copy the detector ``choice`` (``scrfd`` or an SCRFD .onnx path) into ``folder`` as detector.onnx,
    check that it runs and decodes at ``input_size``, and return its manifest entry with the retry chain
    ``fallback``."""
    if choice == "scrfd":
        source_path, source, architecture = scrfd.vectron_model_path(), scrfd.vectron_source(), "scrfd-500m"
    elif Path(choice).suffix.lower() == ".onnx":
        source_path = Path(choice)
        if not source_path.is_file():
            raise BfmError(f"detector model not found: {source_path}")
        source, architecture = f"{source_path.name} (sha256 {sha256_file(source_path)})", "scrfd"
    else:
        raise BfmError(f"a bundle detector must be 'scrfd' or a path to an SCRFD .onnx, got {choice!r} "
                       "(yunet and mtcnn run on the host: choose them with --detector when verifying)")
    dest = folder / DETECTOR_FILE
    shutil.copyfile(source_path, dest)
    spec = replace(scrfd_spec(dest, input_size, source=source), architecture=architecture, fallback=fallback)
    runner = OnnxRunner(dest, spec.input_name, spec.output_names)
    # A blank image must run and decode at this size (the decoder checks every output's anchor count).
    NetworkDetector(spec, runner).detect(np.zeros((input_size, input_size, 3), np.uint8))
    return replace(spec, sha256=sha256_file(dest), params=_params(dest))


def _params(path: Path) -> int:
    return int(sum(array.size for array in read_graph(path).initializers.values()))
