"""The mask classifier C of the paper's Table I.

conv4x4/4 (16) -> BatchNorm2d -> ReLU -> flatten (28*28*16 = 12544) -> linear 512 -> BatchNorm1d -> linear 2.
Logit 0 = unmasked, logit 1 = masked (the paper's C(.)_1 and C(.)_2). 6,425,906 parameters, ~7.03 M MACs.
"""

from __future__ import annotations

import torch
from torch import nn

from bfm_deploy.contract import MASKED as MASKED  # re-exported with the network whose logits they index
from bfm_deploy.contract import UNMASKED as UNMASKED

from .registry import register_model


class MaskClassifier(nn.Module):
    """``[N,3,112,112]`` normalised RGB -> ``[N,2]`` logits (0 unmasked, 1 masked)."""

    def __init__(self, hidden: int = 512, num_classes: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, kernel_size=4, stride=4)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(16 * 28 * 28, hidden)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.relu(self.bn1(self.conv(x))), 1)
        return self.fc2(self.bn2(self.fc1(x)))


@register_model("classifier", "classifier", "mask classifier C of the paper's Table I (0 unmasked, 1 masked)")
def classifier(hidden: int = 512) -> MaskClassifier:
    return MaskClassifier(hidden)
