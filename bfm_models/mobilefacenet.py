"""ArcFace MobileFaceNet ("mbf"), the variant of insightface's ``w600k_mbf.onnx`` (WebFace600K).

Structure (arcface_torch ``get_mbf``: blocks (1, 4, 6, 2), width scale 2), 112x112 input:

    stem      conv3x3/2 3->128 + BN + PReLU; grouped conv3x3 128->128 (64 groups) + BN + PReLU   -> 56x56
    stage 1   depthwise bottleneck /2 (128), 4 residual bottlenecks (128, expansion 128)          -> 28x28
    stage 2   depthwise bottleneck /2 (128->256), 6 residual bottlenecks (256, expansion 256)     -> 14x14
    stage 3   depthwise bottleneck /2 (256, expansion 512), 2 residual bottlenecks (256)          -> 7x7
    conv_sep  conv1x1 256->512 + BN + PReLU
    head      conv1x1 512->64 + BN + PReLU, flatten (3136), ``fc`` linear 3136->512, ``features`` BN1d

The head is what ``w600k_mbf.onnx`` contains (a 64-channel 1x1 reduction, a biased linear layer over the
7x7x64 map and a BatchNorm1d), not the global depthwise (GDC) head of later arcface_torch versions; we follow
the ONNX so that its weights import exactly (``bfm_models.pretrained``). 49 convolutions, each followed
by a BatchNorm; 34 of them by a PReLU.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model


class ConvBlock(nn.Module):
    """conv (no bias) -> BN -> PReLU."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
            nn.PReLU(out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """conv (no bias) -> BN, no activation (the linear bottleneck projection)."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``inner`` -> depthwise 3x3 (stride) -> 1x1 linear projection."""

    def __init__(self, in_c: int, out_c: int, inner: int, stride: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, inner),
            ConvBlock(inner, inner, kernel=3, stride=stride, padding=1, groups=inner),
            LinearBlock(inner, out_c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """``num_block`` shape-preserving bottlenecks with identity shortcuts."""

    def __init__(self, channels: int, num_block: int, inner: int):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(channels, channels, inner, stride=1, residual=True) for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """``[N,3,112,112]`` normalised RGB -> ``[N,num_features]`` raw embedding."""

    def __init__(self, num_features: int = 512, blocks: tuple[int, int, int, int] = (1, 4, 6, 2), scale: int = 2):
        super().__init__()
        if blocks[0] != 1:
            raise ValueError("only the w600k_mbf layout (blocks[0] == 1) is implemented")
        c1, c2 = 64 * scale, 128 * scale
        self.layers = nn.ModuleList(
            [
                ConvBlock(3, c1, kernel=3, stride=2, padding=1),
                ConvBlock(c1, c1, kernel=3, stride=1, padding=1, groups=64),
                DepthWise(c1, c1, inner=128, stride=2),
                Residual(c1, blocks[1], inner=128),
                DepthWise(c1, c2, inner=256, stride=2),
                Residual(c2, blocks[2], inner=256),
                DepthWise(c2, c2, inner=512, stride=2),
                Residual(c2, blocks[3], inner=256),
            ]
        )
        self.conv_sep = ConvBlock(c2, 512)
        self.conv_reduce = ConvBlock(512, 64)
        self.fc = nn.Linear(64 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        x = self.conv_reduce(self.conv_sep(x))
        return self.features(self.fc(torch.flatten(x, 1)))


@register_model("mbf", "extractor", "ArcFace MobileFaceNet (layout of insightface w600k_mbf.onnx)",
                pretrained=("w600k_mbf",))
def mbf(num_features: int = 512) -> MobileFaceNet:
    return MobileFaceNet(num_features)
