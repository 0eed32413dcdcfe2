"""Face detection and five-point alignment, torch-free.

Detectors: SCRFD (a bundle network, ``detector.onnx``, batched on the bundle's backend), YuNet and MTCNN (host
detectors on the CPU); ``open_detector`` picks one by the ``--detector`` grammar (the names in ``DETECTORS``).
``FaceAligner`` turns images into aligned crops.
"""

from .choice import (DETECTOR_HELP, DETECTOR_NAMES, DETECTORS, DetectorChoice, DetectorContext, check_choice,
                     open_aligner, open_detector, scrfd_spec)
from .fallback import FIRST_PASS, FallbackChain, FallbackStep, parse_chain
from .face import AlignedFace, AlignerConfig, Detector, FaceAligner, NoFaceError, face_priority
from .detection import Face
from .mtcnn import MtcnnConfig, MtcnnDetector
from .network import NetworkDetector, OnnxRunner, letterbox
from .spec import DetectorSpec
from .yunet import YunetConfig, YunetDetector

__all__ = [
    "DETECTOR_HELP",
    "DETECTOR_NAMES",
    "DETECTORS",
    "DetectorChoice",
    "DetectorContext",
    "AlignedFace",
    "AlignerConfig",
    "Detector",
    "DetectorSpec",
    "Face",
    "FaceAligner",
    "MtcnnConfig",
    "MtcnnDetector",
    "NetworkDetector",
    "NoFaceError",
    "OnnxRunner",
    "FIRST_PASS",
    "FallbackChain",
    "FallbackStep",
    "parse_chain",
    "open_aligner",
    "YunetConfig",
    "YunetDetector",
    "check_choice",
    "face_priority",
    "letterbox",
    "open_detector",
    "scrfd_spec",
]
