"""``create_model(name, pretrained=None, **kwargs)``: the one way to get a network, fresh or with weights."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from bfm_deploy.errors import BfmError

from .pretrained import load_pretrained
from .registry import MODELS


def create_model(name: str, pretrained: str | os.PathLike[str] | None = None, **kwargs: Any) -> nn.Module:
    """A network by registry name, randomly initialised or with weights ``pretrained`` (a registered source
    name such as ``w600k_mbf``, or a weights file: see ``load_pretrained``).

    ``r18``, ``r34``, ``r50``, ``r100`` (kwargs ``dropout``, ``num_features``), ``mbf`` (``num_features``),
    ``classifier``. Extractors map ``[N,3,112,112]`` normalised RGB to ``[N,512]`` raw embeddings; the
    classifier maps it to ``[N,2]`` logits.
    """
    entry = MODELS.get(name)
    try:
        model = entry.build(**kwargs)
    except TypeError as exc:
        raise BfmError(f"bad options for model {name!r}: {exc}") from None
    if pretrained is None:
        return model
    return load_pretrained(model, pretrained)
