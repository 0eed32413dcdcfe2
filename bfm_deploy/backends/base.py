"""The contract every inference backend (ort, openvino, trt, torch) implements.

A backend runs the three networks of a bundle on preprocessed batches: NCHW float32, RGB, 112x112,
normalised as (x - 127.5) / 127.5. It knows nothing about images, detection or routing. Each backend module
registers its class in ``BACKENDS`` with what it needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..contract import FACE_MEAN, FACE_STD, Network
from ..errors import BfmError
from ..registry import Registry
from ..tensor import preprocess, to_nchw

# Only for ort.py until its import moves to ..contract (where every other module takes the network names).
from ..contract import NETWORKS as NETWORKS


class Backend(ABC):
    """Runs ``classifier`` (N x 2 logits), ``full`` and ``partial`` (N x 512 raw embeddings)."""

    name: str
    # True where infer_crops is the cheaper way in (uint8 uploaded and normalised on the device): the Verifier
    # then hands over crops instead of the float tensor.
    takes_uint8: bool = False

    @abstractmethod
    def infer(self, network: Network, batch: np.ndarray) -> np.ndarray:
        """Run one network on one batch; returns float32."""

    def detect(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the bundle's detector (``detector.onnx``) on a letterboxed NCHW float32 batch; its outputs in
        the manifest's order."""
        raise BfmError(f"the {self.name} backend has no detector: the bundle has no detector.onnx")

    def infer_crops(self, network: Network, crops: np.ndarray, mean: float = FACE_MEAN,
                    std: float = FACE_STD) -> np.ndarray:
        """``infer`` on aligned BGR uint8 crops (N x H x W x 3), normalised as ``bfm_deploy.tensor.preprocess``
        does. Here on the host; the torch backend on CUDA uploads the uint8 bytes and normalises on the GPU."""
        return self.infer(network, preprocess(list(crops), mean, std))

    def infer_concurrent_crops(self, jobs: dict[Network, np.ndarray], mean: float = FACE_MEAN,
                               std: float = FACE_STD) -> dict[Network, np.ndarray]:
        """``infer_concurrent`` on aligned BGR uint8 crops (see ``infer_crops``)."""
        return self.infer_concurrent({n: preprocess(list(c), mean, std) for n, c in jobs.items() if len(c)})

    def detect_canvases(self, canvases: np.ndarray, mean: float, std: float,
                        reverse_channels: bool) -> list[np.ndarray]:
        """``detect`` on letterboxed uint8 canvases (N x S x S x 3, BGR), normalised as
        ``bfm_deploy.tensor.to_nchw`` does (on the GPU by the torch backend on CUDA)."""
        return self.detect(to_nchw(list(canvases), mean, std, reverse_channels))

    def infer_concurrent(self, jobs: dict[Network, np.ndarray]) -> dict[Network, np.ndarray]:
        """Run several networks on their own batches, overlapping them where the backend can.

        The default runs them one after another; ort overrides it with one thread per session and trt
        with one CUDA stream per network.
        """
        return {network: self.infer(network, batch) for network, batch in jobs.items() if len(batch)}

    def describe(self) -> dict[str, Any]:
        """What ran, for --json and benchmark reports: the name and device, and what else the backend chose."""
        return {"name": self.name, "device": getattr(self, "device", "cpu")}

    def close(self) -> None:
        """Release device memory and sessions."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class AutoTry:
    """How ``auto`` tries a backend (in registration order): those ``on="gpu"`` on a machine with an NVIDIA GPU,
    then those ``on="cpu"``, then ort on the CPU."""

    options: Mapping[str, Any] = field(default_factory=dict)  # what it is created with there, e.g. device="cuda"
    available: Callable[[], bool] | None = None  # a cheap check before trying (None: simply try it)
    on: Literal["gpu", "cpu"] = "gpu"


@dataclass(frozen=True)
class BackendEntry:
    """A backend by name: how to create it and what it needs (the extra that installs its dependencies)."""

    create: Callable[..., Backend]  # (bundle, **options); BfmError where what it needs is missing
    needs: str  # in words, for messages and docs
    extra: str | None = None  # the setup.cfg extra with its dependencies; None: the base install
    auto: AutoTry | None = None  # None: auto never picks it on a GPU


# Filled by each backend module where its class is defined; bfm_deploy.backends imports them all in the order
# of the --backend choices.
BACKENDS: Registry[BackendEntry] = Registry("backend")
