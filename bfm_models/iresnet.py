"""ArcFace IResNet (r18/r34/r50/r100), state-dict compatible with insightface arcface_torch checkpoints.

The "improved" residual block of ArcFace: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus a
projection shortcut (conv1x1 + BN) where the shape changes. Every stage halves the resolution, so a 112x112
input leaves a 7x7x512 map that is flattened into ``fc`` and standardised by the ``features`` BatchNorm1d.
Module and attribute names mirror arcface_torch so that its published ``backbone.pth`` files load with
``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .registry import register_model

#: blocks per stage, as in arcface_torch
IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}

_BN_EPS = 1e-5


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block of ArcFace's IResNet (no final activation)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=_BN_EPS)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """IResNet feature extractor: ``[N,3,112,112]`` normalised RGB -> ``[N,num_features]`` raw embedding."""

    # the last stage leaves a 7x7 map at 112x112 input
    fc_scale = 7 * 7

    def __init__(self, layers: Sequence[int], dropout: float = 0.0, num_features: int = 512):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"IResNet needs four stage depths, got {list(layers)}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=_BN_EPS)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0], stride=2)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=_BN_EPS)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=_BN_EPS),
            )
        modules: list[nn.Module] = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        modules += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def _init_weights(self) -> None:
        # arcface_torch's recipe: small normal conv weights, unit BN; the embedding BN keeps a frozen unit
        # scale (only its shift is learnt), which keeps the ArcFace angle well conditioned early in training.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def iresnet(name: str, dropout: float = 0.0, num_features: int = 512) -> IResNet:
    """Build ``r18``/``r34``/``r50``/``r100``."""
    return IResNet(IRESNET_LAYERS[name], dropout=dropout, num_features=num_features)


_SOURCE = "insightface arcface_torch layout"


@register_model("r18", "extractor", f"ArcFace IResNet-18 ({_SOURCE}, blocks {IRESNET_LAYERS['r18']})")
def r18(dropout: float = 0.0, num_features: int = 512) -> IResNet:
    return iresnet("r18", dropout, num_features)


@register_model("r34", "extractor", f"ArcFace IResNet-34 ({_SOURCE}, blocks {IRESNET_LAYERS['r34']})")
def r34(dropout: float = 0.0, num_features: int = 512) -> IResNet:
    return iresnet("r34", dropout, num_features)


@register_model("r50", "extractor", f"ArcFace IResNet-50 ({_SOURCE}, blocks {IRESNET_LAYERS['r50']})")
def r50(dropout: float = 0.0, num_features: int = 512) -> IResNet:
    return iresnet("r50", dropout, num_features)


@register_model("r100", "extractor", f"ArcFace IResNet-100 ({_SOURCE}, blocks {IRESNET_LAYERS['r100']})")
def r100(dropout: float = 0.0, num_features: int = 512) -> IResNet:
    return iresnet("r100", dropout, num_features)
