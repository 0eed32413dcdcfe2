"""Model registry: ``get_model(name)`` and the metadata of each architecture (``model_info(name)``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from bfm_deploy.contract import EMBEDDING_SIZE
from bfm_deploy.errors import BfmError

from .classifier import MaskClassifier
from .iresnet import IRESNET_LAYERS, iresnet
from .macs import count_macs, count_params
from .mobilefacenet import MobileFaceNet

INPUT_SIZE = (3, 112, 112)

Kind = Literal["extractor", "classifier"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: how to build it and what it is."""

    name: str
    kind: Kind
    description: str
    build: Callable[..., nn.Module]


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


def _iresnet_spec(name: str) -> ModelSpec:
    depth = sum(IRESNET_LAYERS[name]) * 2 + 2
    return ModelSpec(
        name,
        "extractor",
        f"ArcFace IResNet-{depth} (insightface arcface_torch layout, blocks {IRESNET_LAYERS[name]})",
        lambda **kw: iresnet(name, **kw),
    )


def _specs() -> dict[str, ModelSpec]:
    specs = {name: _iresnet_spec(name) for name in IRESNET_LAYERS}
    specs["mbf"] = ModelSpec(
        "mbf", "extractor", "ArcFace MobileFaceNet (layout of insightface w600k_mbf.onnx)", MobileFaceNet
    )
    specs["classifier"] = ModelSpec(
        "classifier", "classifier", "mask classifier C of the paper's Table I (0 unmasked, 1 masked)", MaskClassifier
    )
    return specs


def list_models() -> list[str]:
    return list(_specs())


def _spec(name: str) -> ModelSpec:
    specs = _specs()
    if name not in specs:
        raise BfmError(f"unknown model {name!r}; available: {', '.join(specs)}")
    return specs[name]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a fresh, randomly initialised network by registry name.

    ``r18``, ``r34``, ``r50``, ``r100`` (kwargs ``dropout``, ``num_features``), ``mbf`` (``num_features``),
    ``classifier``. Extractors map ``[N,3,112,112]`` normalised RGB to ``[N,512]`` raw embeddings; the
    classifier maps it to ``[N,2]`` logits.
    """
    spec = _spec(name)
    try:
        return spec.build(**kwargs)
    except TypeError as exc:
        raise BfmError(f"bad options for model {name!r}: {exc}") from None


def model_info(name: str) -> ModelInfo:
    """Parameter and MAC counts of ``name`` at its defaults, measured on a weightless (meta) instance."""
    spec = _spec(name)
    with torch.device("meta"):
        model = spec.build()
    output = ("embedding", EMBEDDING_SIZE) if spec.kind == "extractor" else ("logits", 2)
    return ModelInfo(
        name=name,
        kind=spec.kind,
        description=spec.description,
        input_size=INPUT_SIZE,
        output_name=output[0],
        output_size=output[1],
        params=count_params(model),
        macs=count_macs(model, (1, *INPUT_SIZE)),
    )
