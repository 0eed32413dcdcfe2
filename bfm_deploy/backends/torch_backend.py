"""PyTorch backend: rebuilds the three networks from the bundle's ``weights.safetensors``.

Rebuilding modules from ONNX initialisers would tie us to exporter naming details, so bfm-export also writes
the state dicts (keys ``classifier.*``, ``full.*``, ``partial.*``) and the manifest names each architecture;
the modules come from ``bfm_train.models.get_model``. torch is imported only when this backend is created.
On CUDA the networks run in FP16 (the accuracy cost is negligible for these models), on CPU in FP32.
The bundle's detector has no torch module of ours: this backend runs ``detector.onnx`` on an onnxruntime CPU
session (rebuilding it in torch is the GPU issue's work).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import BfmError
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
            from safetensors.torch import load_file

            from bfm_train.models import get_model
            from bfm_train.models.pretrained import load_state_dict_checked
        except ImportError as exc:
            raise BfmError(f"torch backend needs the training extras (pip install 'bfm[train]'): {exc}") from None
        if bundle.weights is None:
            raise BfmError(f"bundle {bundle.root} has no weights.safetensors for the torch backend; "
                           "re-export it with bfm-export or use --backend ort")
        bundle.verify_weights()
        if device not in ("auto", "cpu", "cuda"):
            raise BfmError(f"torch backend: unknown device {device!r} (auto, cpu or cuda)")
        if device == "cuda" and not torch.cuda.is_available():
            raise BfmError("torch backend: CUDA requested but torch sees no GPU")
        self.device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
        self.fp16 = (self.device == "cuda") if fp16 is None else fp16
        if self.fp16 and self.device == "cpu":
            raise BfmError("torch backend: FP16 is only supported on CUDA")
        self._torch = torch
        try:
            state = load_file(str(bundle.weights))
        except Exception as exc:  # safetensors raises its own error type for corrupt files
            raise BfmError(f"cannot read {bundle.weights}: {exc}") from None
        self._models: dict[Network, Any] = {}
        for network in NETWORKS:
            prefix = f"{network}."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            model = get_model(bundle.models[network].architecture)
            load_state_dict_checked(model, part, f"{bundle.weights.name} [{network}]")
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
        return f"TorchBackend(device={self.device!r}, fp16={self.fp16})"
