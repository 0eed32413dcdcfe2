"""PyTorch backend: the bundle's networks as torch modules, from ``weights.safetensors`` or from the ONNX graphs.

bfm-export writes the state dicts (keys ``classifier.*``, ``full.*``, ``partial.*``) and the manifest names each
architecture; the modules come from ``bfm_deploy.models.get_model``. A bundle without that file (the shipped
demo) is rebuilt from its ONNX initialisers (``bfm_deploy.models.pretrained.onnx_state_dict``: MobileFaceNet, the
classifier and the IResNets, whose exported graphs fold each BatchNorm into the convolution before it); every rebuilt network
is checked against the graph on a probe batch before it is used. torch is imported only when this backend is
created.
On CUDA the networks run in FP16 (the accuracy cost is negligible for these models), on CPU in FP32.
The bundle's detector has no torch module of ours: this backend runs ``detector.onnx`` on an onnxruntime CPU
session (rebuilding it in torch is the GPU issue's work).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import TRAIN_EXTRA, BfmError
from .base import NETWORKS, Backend, Network

if TYPE_CHECKING:
    from ..bundle import Bundle

Device = Literal["auto", "cpu", "cuda"]


def torch_cuda_available() -> bool:
    """True when torch is importable and sees a GPU (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, bundle: Bundle, device: Device = "auto", fp16: bool | None = None) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BfmError(f"torch backend needs the training extras: {TRAIN_EXTRA} ({exc})") from None
        if device not in ("auto", "cpu", "cuda"):
            raise BfmError(f"torch backend: unknown device {device!r} (auto, cpu or cuda)")
        if device == "cuda" and not torch.cuda.is_available():
            raise BfmError("torch backend: CUDA requested but torch sees no GPU")
        self.device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
        self.fp16 = (self.device == "cuda") if fp16 is None else fp16
        if self.fp16 and self.device == "cpu":
            raise BfmError("torch backend: FP16 is only supported on CUDA")
        self._torch = torch
        modules, self.weights_from = torch_modules(bundle)
        self._models: dict[Network, Any] = {}
        for network, model in modules.items():
            model.eval().to(self.device)
            if self.fp16:
                model.half()
            self._models[network] = model
        self._detector: Any = None
        if bundle.detector is not None:
            from ..detect.network import OnnxRunner

            spec = bundle.detector
            self._detector = OnnxRunner(spec.file, spec.input_name, spec.output_names)

    def detect(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._detector is None:
            return super().detect(batch)
        return self._detector(np.ascontiguousarray(batch, dtype=np.float32))  # type: ignore[no-any-return]

    def infer(self, network: Network, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.fp16:
            x = x.half()
        with torch.inference_mode():
            out = self._models[network](x)
        return out.float().cpu().numpy()

    def close(self) -> None:
        self._models = {}
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"TorchBackend(device={self.device!r}, fp16={self.fp16}, weights from {self.weights_from})"


def torch_modules(bundle: Bundle, networks: tuple[Network, ...] = NETWORKS) -> tuple[dict[Network, Any], str]:
    """The bundle's ``networks`` as torch modules on the CPU (FP32, eval), and where their weights came from:
    ``weights.safetensors`` when the bundle has it, else its ONNX graphs. Shared by this backend and the GPU check."""
    try:
        from bfm_deploy.models import get_model
        from bfm_deploy.models.pretrained import load_state_dict_checked
    except ImportError as exc:
        raise BfmError(f"torch backend needs the training extras: {TRAIN_EXTRA} ({exc})") from None
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
        model = get_model(bundle.models[network].architecture)
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

    from bfm_deploy.models.pretrained import onnx_state_dict

    load_checked(model, onnx_state_dict(onnx_path, model), onnx_path.name)
    model.eval()
    probe = np.random.default_rng(0).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: probe})[0]
    with torch.inference_mode():
        got = model(torch.from_numpy(probe)).numpy()
    cosine = (expected * got).sum(1) / np.maximum(np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
    if not float(cosine.min()) >= REBUILD_MIN_COSINE:
        raise BfmError(f"torch backend: the network rebuilt from {onnx_path.name} disagrees with the graph "
                       f"(cosine {float(cosine.min()):.6f}); re-export the bundle with weights.safetensors")
