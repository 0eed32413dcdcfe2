"""The paper's whole system (Fig. 3): mask classifier C, full-face extractor E_F, partial-face extractor E_P.

``BFMSystem.state_dict()`` keys are prefixed ``classifier.``, ``full.``, ``partial.`` exactly as the training
checkpoint contract of ARCHITECTURE.md stores them, so a trainer writes ``system.state_dict()`` under those
names and ``BFMSystem.from_checkpoint(path)`` rebuilds the modules.

Baseline checkpoints (the paper's Baseline 1/2: one ArcFace extractor, no classifier) store only ``full.*``.
``from_checkpoint`` then sets ``classifier`` and ``partial`` to ``None`` rather than inventing copies (export
decides what a baseline's bundle holds). Routing is not here: the runtime's routed pipeline
(``bfm_deploy.pipeline``) applies the rule at the bundle's calibrated mask threshold.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bfm_deploy.errors import BfmError

from bfm_models.pretrained import load_state_dict_checked
from bfm_models import create_model, list_models

CHECKPOINT_FORMAT = "bfm-checkpoint/1"
PARTS = ("classifier", "full", "partial")


class BFMSystem(nn.Module):
    """Container of C, E_F and E_P with the paper's inference-time routing."""

    classifier: nn.Module | None
    full: nn.Module
    partial: nn.Module | None

    def __init__(self, full: nn.Module, classifier: nn.Module | None = None, partial: nn.Module | None = None, backbone: str = "r50"):
        super().__init__()
        self.backbone = backbone
        # registration order fixes the state_dict order: classifier., full., partial.
        self.register_module("classifier", classifier)
        self.register_module("full", full)
        self.register_module("partial", partial)

    @classmethod
    def build(cls, backbone: str = "r50", pretrained: str | os.PathLike[str] | None = None, **backbone_kwargs: Any) -> BFMSystem:
        """Fresh system: classifier of Table I and two ``backbone`` extractors (E_F, E_P).

        ``pretrained`` (any ``load_pretrained`` source, e.g. ``"w600k_mbf"`` with ``backbone="mbf"``)
        initialises both extractors with the same weights; the classifier always starts from scratch.
        """
        if backbone == "classifier" or backbone not in list_models():
            raise BfmError(f"unknown backbone {backbone!r}; available: {', '.join(n for n in list_models() if n != 'classifier')}")
        full = create_model(backbone, pretrained=pretrained, **backbone_kwargs)
        partial = create_model(backbone, **backbone_kwargs)
        if pretrained is not None:
            partial.load_state_dict(full.state_dict())  # both start from the same published weights
        return cls(full, classifier=create_model("classifier"), partial=partial, backbone=backbone)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> BFMSystem:
        """Rebuild the networks of a ``bfm-checkpoint/1`` safetensors file, in eval mode.

        Only the ``classifier.``/``full.``/``partial.`` tensors are read (heads and optimizer state are the
        trainer's business). ``full.*`` is required; a part without tensors (baseline recipes) is ``None``.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise BfmError(f"checkpoint not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != CHECKPOINT_FORMAT:
                    raise BfmError(f"{path.name} is not a {CHECKPOINT_FORMAT} file (format={meta.get('format')!r})")
                backbone = meta.get("backbone", "")
                if backbone == "classifier" or backbone not in list_models():
                    raise BfmError(f"{path.name}: unknown backbone {backbone!r} in metadata")
                parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in PARTS}
                for key in fh.keys():
                    prefix, _, rest = key.partition(".")
                    if prefix in parts:
                        parts[prefix][rest] = fh.get_tensor(key)
        except SafetensorError as exc:
            raise BfmError(f"cannot read {path.name} as safetensors: {exc}") from None
        if not parts["full"]:
            raise BfmError(f"{path.name} has no full.* tensors")
        modules: dict[str, nn.Module | None] = {}
        for part, state in parts.items():
            if not state:
                modules[part] = None
                continue
            module = create_model("classifier" if part == "classifier" else backbone)
            load_state_dict_checked(module, state, f"{path.name} [{part}]")
            modules[part] = module
        full = modules["full"]
        assert full is not None  # checked above
        return cls(full, classifier=modules["classifier"], partial=modules["partial"], backbone=backbone).eval()
