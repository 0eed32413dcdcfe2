"""The paper's training losses, Eqs. 1-7 (Sec. III B-E), each a batch mean.

Notation: x_i unmasked face, x̂_i its synthetically masked copy, y_i the identity, C the mask classifier
(logit 0 = unmasked, logit 1 = masked), E_F / E_P the full- / partial-face extractors, W^F / W^P the ArcFace
layers LR_F / LR_P, s the scale and m the additive angular margin.

* Eq. 1  ``mask_loss``            L_mask = -1/B sum_i [log softmax(C(x_i))_0 + log softmax(C(x̂_i))_1]
* Eqs. 2-3 ``ArcFaceHead``        L_arc = -1/B sum_i log( e^{s cos(θ_yi + m)} / (e^{s cos(θ_yi + m)} + sum_{j≠yi} e^{s cos θ_j}) )
* Eq. 4  ``guided_loss``          L_guided = 1/B sum_i || E_P(x_i)/||E_P(x_i)|| - E_P(x̂_i)/||E_P(x̂_i)|| ||²
* Eqs. 5-6 ``partial_arcface_loss`` L_arc^partial = ArcFace_P(E_P(x)) + ArcFace_P(E_P(x̂)) (the two batch means)
* Eq. 7  ``RecipeLoss`` (bfm_train.train.recipes): L_total = L_mask + L_guided + L_arc^full + L_arc^partial

Eqs. 3 and 6 write the logit as ||W_j|| ||E(x_i)|| cos(θ); as in ArcFace [3] (and as the paper's "s is a
hyper-parameter to multiply all logits") both weights and features are L2-normalised, so the logit is
s cos(θ).
"""

from __future__ import annotations


import torch
from torch import nn
from torch.nn import functional as F

from bfm_deploy.errors import BfmError


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 (autocast) -> float32; float32/float64 unchanged. The clamp below uses the dtype's epsilon,
    which for fp16 (1e-3) would visibly distort angles, and softmax of s = 64 logits wants the range."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class ArcFaceHead(nn.Module):
    """ArcFace layer LR (Table I: linear 512 -> M) with the additive angular margin loss, Eqs. 2-3.

    ``forward(embeddings, labels)`` returns the batch-mean loss. The target logit is computed in the exact
    angle form s·cos(θ_y + m) with θ_y = arccos(cos θ_y), the cosine clamped to [-1 + ε, 1 - ε] (ε the
    float32 machine epsilon) because d arccos/dx is infinite at ±1; with the clamp the gradient stays
    finite (|d arccos/dx| <= 1/sqrt(2ε) ≈ 2e3) for any input, including θ_y + m > π.

    Choice for θ_y + m > π: we keep the equation as printed. There cos(θ_y + m) is no longer decreasing in
    θ_y (a known property of ArcFace), so the margin makes such a sample's target logit larger rather than
    smaller; the common alternatives ("easy margin", or replacing the logit by cos θ - m sin m past π - m)
    change Eqs. 2-3, and such samples (target almost opposite its class centre) are rare after the first
    iterations. The value is finite and smooth there, which is what training needs.

    Precision: in float32 a cosine within 1.2e-7 of ±1 cannot resolve angles below about 5e-4 rad anyway;
    the clamp moves θ_y by at most that much, only for such samples. In float64 it is ~2e-8 rad.
    """

    def __init__(self, in_features: int, num_classes: int, s: float = 64.0, m: float = 0.5):
        super().__init__()
        if in_features < 1 or num_classes < 2:
            raise BfmError(f"ArcFaceHead needs in_features >= 1 and num_classes >= 2, got {in_features}, {num_classes}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.s = s
        self.m = m
        # row j is the class centre W_j; its norm is irrelevant (normalised in forward)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos θ_j between each embedding and each class centre, ``[N, num_classes]``."""
        x = F.normalize(_at_least_fp32(embeddings), dim=1)
        w = F.normalize(_at_least_fp32(self.weight), dim=1)
        return F.linear(x, w)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """s·cos θ_j for j ≠ y and s·cos(θ_y + m) for the target class, ``[N, num_classes]``."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.in_features:
            raise BfmError(f"ArcFaceHead expects [N, {self.in_features}] embeddings, got {list(embeddings.shape)}")
        if labels.shape != (embeddings.shape[0],):
            raise BfmError(f"labels must be [{embeddings.shape[0]}], got {list(labels.shape)}")
        cos = self.cosine(embeddings)
        labels = labels.long()[:, None]
        eps = torch.finfo(cos.dtype).eps
        theta = torch.acos(cos.gather(1, labels).clamp(-1.0 + eps, 1.0 - eps))
        target = torch.cos(theta + self.m)
        return self.s * cos.scatter(1, labels, target)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(embeddings, labels), labels.long())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, s={self.s}, m={self.m}"


def mask_loss(logits_unmasked: torch.Tensor, logits_masked: torch.Tensor) -> torch.Tensor:
    """Eq. 1: softmax loss of C on unmasked faces (class 0) plus on their masked copies (class 1)."""
    if logits_unmasked.ndim != 2 or logits_unmasked.shape[1] != 2 or logits_unmasked.shape != logits_masked.shape:
        raise BfmError(f"mask_loss needs two [B, 2] logit tensors, got {list(logits_unmasked.shape)} and {list(logits_masked.shape)}")
    zeros = torch.zeros(logits_unmasked.shape[0], dtype=torch.long, device=logits_unmasked.device)
    return F.cross_entropy(_at_least_fp32(logits_unmasked), zeros) + F.cross_entropy(_at_least_fp32(logits_masked), zeros + 1)


def guided_loss(f: torch.Tensor, f_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 4: batch mean of the squared L2 distance between L2-normalised E_P(x) and E_P(x̂) (in [0, 4])."""
    if f.ndim != 2 or f.shape != f_hat.shape:
        raise BfmError(f"guided_loss needs two [B, D] feature tensors, got {list(f.shape)} and {list(f_hat.shape)}")
    diff = F.normalize(_at_least_fp32(f), dim=1) - F.normalize(_at_least_fp32(f_hat), dim=1)
    return diff.pow(2).sum(dim=1).mean()


def partial_arcface_loss(head: ArcFaceHead, f: torch.Tensor, f_hat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eqs. 5-6: the partial-face ArcFace layer's loss on E_P(x) plus on E_P(x̂), same labels."""
    return head(f, labels) + head(f_hat, labels)
