"""Face detection (MTCNN, or SCRFD, on ONNX Runtime) and five-point alignment; torch-free."""

from .face import AlignerConfig, AlignmentInfo, FaceAligner, NoFaceError, detect_and_align, face_priority
from .mtcnn import Face, MtcnnConfig, MtcnnDetector
from .scrfd import ScrfdConfig, ScrfdDetector

__all__ = [
    "AlignerConfig",
    "AlignmentInfo",
    "Face",
    "FaceAligner",
    "MtcnnConfig",
    "MtcnnDetector",
    "NoFaceError",
    "ScrfdConfig",
    "ScrfdDetector",
    "detect_and_align",
    "face_priority",
]
