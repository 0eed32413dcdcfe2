"""PyTorch backend: the bundle's networks as torch modules, from ``weights.safetensors`` or from the ONNX graphs.

bfm-export writes the state dicts (keys ``classifier.*``, ``full.*``, ``partial.*``) and the manifest names each
architecture; the modules come from ``bfm_models.create_model``. A bundle without that file (the shipped
demo) is rebuilt from its ONNX initialisers (``bfm_models.pretrained.onnx_state_dict``: MobileFaceNet, the
classifier and the IResNets, whose exported graphs fold each BatchNorm into the convolution before it); every rebuilt network
is checked against the graph on a probe batch before it is used. The bundle's detector graph is rebuilt the
same way (``bfm_models.onnx_detector``, checked against ONNX Runtime at load)
and runs on the device when the device is CUDA, so that a raw photo costs the CPU only its decoding and
letterboxing; on the CPU it stays on onnxruntime, which runs this small graph about 6x faster than torch there
(8 images at 320: 84 ms against 530 ms, one measurement on a shared 2-core machine). torch is imported only when this backend is created.

How the networks run is ``TorchOptions`` (``torch_options.py``): on CUDA FP16 (or BF16), channels-last,
pinned buffers, CUDA graphs per batch size, one stream per network and uint8 uploads, each on its own switch;
on the CPU the plain FP32 path. Each network runs through its own ``Lane`` (``torch_lane.py``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..contract import INPUT_SHAPE
from ..contract import FACE_MEAN, FACE_STD, NETWORKS, Network
from ..errors import BfmError
from ..optional import require
from .base import BACKENDS, AutoTry, Backend, BackendEntry
from .torch_lane import Form, Lane, Normalisation, place_module, run_concurrently
from .torch_options import Resolved, TorchOptions

if TYPE_CHECKING:
    from ..bundle import Bundle

Device = Literal["auto", "cpu", "cuda"]
DETECTOR = "detector"  # the lane of the bundle's detector, beside the three networks'


def torch_cuda_available() -> bool:
    """True when torch is importable and sees a GPU (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, bundle: Bundle, device: Device = "auto", options: TorchOptions | None = None) -> None:
        torch = require("torch", "train", "the torch backend")
        if device not in ("auto", "cpu", "cuda"):
            raise BfmError(f"torch backend: unknown device {device!r} (auto, cpu or cuda)")
        if device == "cuda" and not torch.cuda.is_available():
            raise BfmError("torch backend: CUDA requested but torch sees no GPU")
        self.device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
        self.options: Resolved = (options or TorchOptions()).resolve(self.device)
        self.takes_uint8 = self.options.gpu_normalise
        self._torch = torch
        if self.options.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True  # process-wide: fixed shapes, so timing algorithms once pays
        modules, self.weights_from = torch_modules(bundle)
        capture_lock = threading.Lock()
        face = Normalisation(bundle.input.mean, bundle.input.std, reverse_channels=True)
        self._lanes: dict[str, Lane] = {
            network: Lane(place_module(model, self.options), self.options, face, capture_lock)
            for network, model in modules.items()}
        self._detector_session: Any = None
        spec = bundle.detector
        if spec is not None and self.options.detector_in_torch:
            detector = torch_detector(bundle)
            norm = Normalisation(spec.mean, spec.std, reverse_channels=spec.channel_order == "RGB")
            self._lanes[DETECTOR] = Lane(place_module(detector, self.options), self.options, norm, capture_lock)
        elif spec is not None:
            from ..detect.network import OnnxRunner

            self._detector_session = OnnxRunner(spec.file, spec.input_name, spec.output_names)

    @property
    def detector_engine(self) -> str:
        """Where the bundle's detector runs: "torch", "onnxruntime" or "none"."""
        return "torch" if DETECTOR in self._lanes else "onnxruntime" if self._detector_session else "none"

    # -- float32 NCHW, the Backend contract --------------------------------------------------------------------

    def infer(self, network: Network, batch: np.ndarray) -> np.ndarray:
        return self._lanes[network].run(batch, "float")[0]

    def infer_concurrent(self, jobs: dict[Network, np.ndarray]) -> dict[Network, np.ndarray]:
        return self._concurrent(jobs, "float")

    def detect(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._detector_session is not None:
            return self._detector_session(np.ascontiguousarray(batch, dtype=np.float32))  # type: ignore[no-any-return]
        if DETECTOR not in self._lanes:
            return super().detect(batch)
        return self._lanes[DETECTOR].run(batch, "float")

    # -- uint8 images, normalised on the device where gpu_normalise is on ---------------------------------------

    def infer_crops(self, network: Network, crops: np.ndarray, mean: float = FACE_MEAN,
                    std: float = FACE_STD) -> np.ndarray:
        if not self._device_normalises(network, mean, std):
            return super().infer_crops(network, crops, mean, std)
        return self._lanes[network].run(_images(crops), "uint8")[0]

    def infer_concurrent_crops(self, jobs: dict[Network, np.ndarray], mean: float = FACE_MEAN,
                               std: float = FACE_STD) -> dict[Network, np.ndarray]:
        if not all(self._device_normalises(n, mean, std) for n in jobs):
            return super().infer_concurrent_crops(jobs, mean, std)
        return self._concurrent({n: _images(c) for n, c in jobs.items()}, "uint8")

    def detect_canvases(self, canvases: np.ndarray, mean: float, std: float,
                        reverse_channels: bool) -> list[np.ndarray]:
        lane = self._lanes.get(DETECTOR)
        if lane is None or not self.options.gpu_normalise or lane.norm != Normalisation(mean, std, reverse_channels):
            return super().detect_canvases(canvases, mean, std, reverse_channels)
        return lane.run(_images(canvases), "uint8")

    def _device_normalises(self, network: str, mean: float, std: float) -> bool:
        lane = self._lanes[network]
        return self.options.gpu_normalise and lane.norm == Normalisation(mean, std, True)

    def _concurrent(self, jobs: dict[Network, np.ndarray], form: Form) -> dict[Network, np.ndarray]:
        live = [(network, batch) for network, batch in jobs.items() if len(batch)]
        if not self.options.streams:  # one stream: nothing to overlap, run them in turn
            return {network: self._lanes[network].run(batch, form)[0] for network, batch in live}
        outputs = run_concurrently([(self._lanes[network], batch, form) for network, batch in live])
        return {network: out[0] for (network, _), out in zip(live, outputs)}

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()
        self._lanes = {}
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return (f"TorchBackend(device={self.device!r}, {self.options.precision}, weights from {self.weights_from}, "
                f"detector on {self.detector_engine})")


def _images(array: np.ndarray) -> np.ndarray:
    images = np.asarray(array)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise BfmError(f"torch backend: expected N x H x W x 3 uint8 images, got {images.dtype} {images.shape}")
    return images


def torch_detector(bundle: Bundle) -> Any:
    """The bundle's detector graph as a torch module on the CPU (FP32, eval), checked against the graph."""
    from bfm_models.onnx_detector import check_against_graph, load_onnx_detector

    spec = bundle.detector
    if spec is None:
        raise BfmError(f"bundle {bundle.root} has no detector.onnx")
    module = load_onnx_detector(spec.file, spec.input_name, spec.output_names)
    check_against_graph(module, spec.file, spec.input_size)  # at every load, like the extractors' rebuilds
    return module


def torch_modules(bundle: Bundle, networks: tuple[Network, ...] = NETWORKS) -> tuple[dict[Network, Any], str]:
    """The bundle's ``networks`` as torch modules on the CPU (FP32, eval), and where their weights came from:
    ``weights.safetensors`` when the bundle has it, else its ONNX graphs. Shared by this backend and the GPU check."""
    create_model = require("bfm_models", "train", "the torch backend").create_model
    load_state_dict_checked = require("bfm_models.pretrained", "train", "the torch backend").load_state_dict_checked
    bundle.verify_weights()
    state: dict[str, Any] | None = None
    if bundle.weights is not None:
        try:
            from safetensors.torch import load_file  # only here: a bundle rebuilt from ONNX needs no safetensors

            state = load_file(str(bundle.weights))
        except Exception as exc:  # safetensors raises its own error type for corrupt files
            raise BfmError(f"cannot read {bundle.weights}: {exc}") from None
    modules: dict[Network, Any] = {}
    for network in networks:
        model = create_model(bundle.models[network].architecture)
        if state is not None and bundle.weights is not None:
            prefix = f"{network}."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            load_state_dict_checked(model, part, f"{bundle.weights.name} [{network}]")
        else:
            _rebuild_from_onnx(model, bundle.path(network), load_state_dict_checked)
        modules[network] = model.eval()
    return modules, "weights.safetensors" if state is not None else "onnx"


# A rebuilt network must reproduce its graph: cosine of the outputs on a fixed random probe batch.
REBUILD_MIN_COSINE = 0.9999


def _rebuild_from_onnx(model: Any, onnx_path: Any, load_checked: Any) -> None:
    import onnxruntime as ort
    import torch

    from bfm_models.pretrained import onnx_state_dict

    load_checked(model, onnx_state_dict(onnx_path, model), onnx_path.name)
    model.eval()
    probe = np.random.default_rng(0).uniform(-1, 1, (4, *INPUT_SHAPE)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: probe})[0]
    with torch.inference_mode():
        got = model(torch.from_numpy(probe)).numpy()
    cosine = (expected * got).sum(1) / np.maximum(np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    if not float(cosine.min()) >= REBUILD_MIN_COSINE:
        raise BfmError(f"torch backend: the network rebuilt from {onnx_path.name} disagrees with the graph "
                       f"(cosine {float(cosine.min()):.6f}); re-export the bundle with weights.safetensors")


BACKENDS.register("torch", BackendEntry(
    TorchBackend, needs="torch and the model definitions (bfm_models)", extra="train",
    auto=AutoTry({"device": "cuda"}, torch_cuda_available)))
