"""Guided Backpropagation (Springenberg et al., "Striving for Simplicity", 2015) through a face extractor.

The gradient of each face's embedding with respect to its input, where every ReLU and PReLU passes back only
positive gradients: a unit's gradient reaches the layer below only where the unit was active (the ordinary
backward rule, which for a PReLU's negative side scales by its slope) and the signal from above is positive.
The objective is the embedding's norm, the embedding projected on its own direction: what makes the
extractor's feature strong, the same quantity for every face, no partner needed.

The map is the largest absolute input gradient over the three colour channels at each pixel (the convention of
Simonyan et al.'s saliency maps): non-negative, 112 x 112 for an aligned crop. torch is needed here only; the
module imports it on first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..optional import require

EXTRA = "explain"


def _torch() -> Any:
    return require("torch", EXTRA, "explanations (bfm-explain)")


@contextmanager
def guided(model: Any) -> Iterator[Any]:
    """``model`` with the guided backward rule on every ReLU and PReLU; the hooks go when the block ends."""
    nn = _torch().nn

    def clip(_module: Any, grad_input: tuple[Any, ...], _grad_output: tuple[Any, ...]) -> tuple[Any, ...]:
        # grad_input already carries the unit's own rule (zero where a ReLU was off, the slope on a PReLU's
        # negative side); keeping its positive part is the "guided" step
        return tuple(g.clamp(min=0) if g is not None else None for g in grad_input)

    handles = [m.register_full_backward_hook(clip) for m in model.modules() if isinstance(m, (nn.ReLU, nn.PReLU))]
    if not handles:
        raise ValueError(f"{type(model).__name__} has no ReLU or PReLU: guided backpropagation does not apply")
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def guided_saliency(model: Any, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N x H x W non-negative float32 maps for an N x 3 x H x W float32 input batch of ``model`` (eval mode), and
    the N embeddings of the same forward pass (the hooks change only the backward one)."""
    torch = _torch()
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"expected N x 3 x H x W, got {tensor.shape}")
    with torch.enable_grad(), guided(model):
        x = torch.from_numpy(np.ascontiguousarray(tensor, np.float32)).requires_grad_(True)
        embedding = model(x)
        # each row's norm: the sum over rows keeps the faces' gradients apart (eval mode, no batch coupling)
        embedding.norm(dim=1).sum().backward()
        assert x.grad is not None
        maps = x.grad.abs().amax(dim=1).numpy().astype(np.float32)
        return maps, embedding.detach().numpy()
