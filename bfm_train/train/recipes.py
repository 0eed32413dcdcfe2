"""The training objectives as one module (so one DistributedDataParallel wrapper covers every network).

* ``bfm`` (Eq. 7): L_mask on C, ArcFace on E_F(x), guided perceptual loss + partial ArcFace on E_P(x), E_P(x_hat).
  ``loss.guided_target: full`` swaps the guided loss's target E_P(x) for the fixed E_F(x) (not in the paper).
  A fully frozen network contributes no term (its forward pass would train nothing).
* ``baseline1``: ArcFace on E_F(x) (unmasked faces only).
* ``baseline2``: ArcFace on E_F of unmasked and masked faces together.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import LossConfig
from .nets import is_frozen


class RecipeLoss(nn.Module):
    """``forward(x, x_hat, y)`` -> {term name: weighted loss}; ``sum(...)`` is the total."""

    def __init__(self, recipe: str, nets: dict[str, nn.Module], heads: dict[str, nn.Module], loss: LossConfig) -> None:
        super().__init__()
        self.recipe = recipe
        self.nets = nn.ModuleDict(nets)
        self.heads = nn.ModuleDict(heads)
        self.weights = loss
        self.active = {part: not is_frozen(net) for part, net in nets.items()}

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        from bfm_train import losses

        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if self.recipe == "baseline1":
            terms["full"] = w.w_full * self._arcface("full", self.nets["full"](x), y)
        elif self.recipe == "baseline2":
            emb = self.nets["full"](torch.cat([x, x_hat]))
            terms["full"] = w.w_full * self._arcface("full", emb, torch.cat([y, y]))
        else:
            if self.active["classifier"]:
                logits = self.nets["classifier"](torch.cat([x, x_hat])).float()
                n = x.shape[0]
                terms["mask"] = w.w_mask * losses.mask_loss(logits[:n], logits[n:])
            full_features = None
            if self.active["full"]:
                full_features = self.nets["full"](x)
                terms["full"] = w.w_full * self._arcface("full", full_features, y)
            if self.active["partial"]:
                # One pass over both halves: E_P meets masked and unmasked faces in the same BatchNorm batch,
                # as it does at inference (Case 2 pairs it with unmasked faces).
                f_both = self.nets["partial"](torch.cat([x, x_hat])).float()
                f, f_hat = f_both[: x.shape[0]], f_both[x.shape[0] :]
                target = f
                if w.guided_target == "full":
                    if full_features is None:
                        with torch.no_grad():
                            full_features = self.nets["full"](x)
                    target = full_features.detach().float()
                with torch.autocast(device_type=x.device.type, enabled=False):
                    terms["guided"] = w.w_guided * losses.guided_loss(target, f_hat)
                    terms["partial"] = w.w_partial * losses.partial_arcface_loss(
                        self.heads["partial"], f, f_hat, y  # type: ignore[arg-type]
                    )
        return terms

    def _arcface(self, part: str, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # The margin arithmetic (cos(theta + m), scale 64) is fragile in float16: keep the head in float32.
        with torch.autocast(device_type=emb.device.type, enabled=False):
            loss: torch.Tensor = self.heads[part](emb.float(), y)
        return loss
