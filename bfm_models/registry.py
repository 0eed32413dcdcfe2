"""The model registry: ``@register_model`` on each architecture's builder, ``list_models()`` and
``model_info(name)`` (timm's shape); ``create_model`` is in ``factory.py``, above the weight importers.

Each architecture file registers its builders when it is imported (``bfm_models/__init__`` imports them all),
with the pretrained sources that fit it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from bfm_deploy.contract import INPUT_SHAPE, OUTPUT_NAMES, OUTPUT_SIZES, Network
from bfm_deploy.registry import Registry

from .macs import count_macs, count_params


Kind = Literal["extractor", "classifier"]
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: how to build it, what it is, and the published weights that fit it."""

    name: str
    kind: Kind
    description: str
    build: Builder
    pretrained: tuple[str, ...] = ()  # names load_pretrained knows (besides any weights file of the right shape)


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of an architecture at its default settings (torchvision-weights style)."""

    name: str
    kind: Kind
    description: str
    input_size: tuple[int, int, int]  # C, H, W; RGB, (x - 127.5) / 127.5
    output_name: str  # ONNX output name of the bundle contract
    output_size: int
    params: int
    macs: int  # multiply-accumulates of one 112x112 image
    pretrained: tuple[str, ...]


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, kind: Kind, description: str,
                   pretrained: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Register the decorated builder as architecture ``name``."""

    def register(build: Builder) -> Builder:
        MODELS.register(name, ModelEntry(name, kind, description, build, pretrained))
        return build

    return register


def list_models(kind: Kind | None = None) -> list[str]:
    return [name for name in MODELS if kind is None or MODELS.get(name).kind == kind]


def model_info(name: str) -> ModelInfo:
    """Parameter and MAC counts of ``name`` at its defaults, measured on a weightless (meta) instance."""
    entry = MODELS.get(name)
    with torch.device("meta"):
        model = entry.build()
    network: Network = "full" if entry.kind == "extractor" else "classifier"
    output = (OUTPUT_NAMES[network], OUTPUT_SIZES[network])
    return ModelInfo(
        name=name,
        kind=entry.kind,
        description=entry.description,
        input_size=INPUT_SHAPE,
        output_name=output[0],
        output_size=output[1],
        params=count_params(model),
        macs=count_macs(model, (1, *INPUT_SHAPE)),
        pretrained=entry.pretrained,
    )
