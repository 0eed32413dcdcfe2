"""The contract every inference backend (ort, trt, torch) implements.

A backend runs the three networks of a bundle on preprocessed batches: NCHW float32, RGB, 112x112,
normalised as (x - 127.5) / 127.5. It knows nothing about images, detection or routing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..errors import BfmError

from ..contract import NETWORKS as NETWORKS, Network as Network  # re-exported: the backend API's names


class Backend(ABC):
    """Runs ``classifier`` (N x 2 logits), ``full`` and ``partial`` (N x 512 raw embeddings)."""

    name: str

    @abstractmethod
    def infer(self, network: Network, batch: np.ndarray) -> np.ndarray:
        """Run one network on one batch; returns float32."""

    def detect(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run the bundle's detector (``detector.onnx``) on a letterboxed NCHW float32 batch; its outputs in
        the manifest's order."""
        raise BfmError(f"the {self.name} backend has no detector: the bundle has no detector.onnx")

    def infer_concurrent(self, jobs: dict[Network, np.ndarray]) -> dict[Network, np.ndarray]:
        """Run several networks on their own batches, overlapping them where the backend can.

        The default runs them one after another; ort overrides it with one thread per session and trt
        with one CUDA stream per network.
        """
        return {network: self.infer(network, batch) for network, batch in jobs.items() if len(batch)}

    def close(self) -> None:
        """Release device memory and sessions."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
