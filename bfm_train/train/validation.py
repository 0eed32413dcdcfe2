"""Validation on a pairs list (LFW pairs.txt-style) at the end of each epoch.

Accuracy here is the simple best-threshold accuracy over all chosen pairs (no 10-fold protocol): a quick,
slightly optimistic progress signal for training, not the number to report (use ``bfm-eval`` for that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from bfm_deploy.datasets import Pair, read_lfw_pairs
from bfm_deploy.errors import BfmError
from bfm_deploy.metrics import best_threshold
from bfm_deploy.progress import progress

from ..data.folders import IMAGE_EXTENSIONS
from ..data.images import load_face, to_tensor
from .config import ValConfig, resolve_path


def best_threshold_accuracy(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the best rule ``same <=> score >= threshold`` over the given pairs."""
    threshold = best_threshold(scores, same)
    return float(((scores >= threshold) == same.astype(bool)).mean()), threshold


def _twin(masked_root: Path, image: Path) -> Path | None:
    base = masked_root / image.parent.name
    for name in [image.name] + [image.stem + ext for ext in IMAGE_EXTENSIONS]:
        if (base / name).is_file():
            return base / name
    return None


@torch.no_grad()
def _embed(net: nn.Module, paths: list[Path], device: torch.device, batch_size: int) -> dict[Path, torch.Tensor]:
    out: dict[Path, torch.Tensor] = {}
    for start in progress(range(0, len(paths), batch_size), desc="validation", unit="batch", leave=False):
        chunk = paths[start : start + batch_size]
        batch = torch.stack([to_tensor(load_face(p)) for p in chunk]).to(device)
        with torch.autocast(device_type=device.type, enabled=device.type == "cuda"):
            emb = net(batch).float()
        for p, e in zip(chunk, nn.functional.normalize(emb, dim=1).cpu(), strict=True):
            out[p] = e
    return out


def _score(net: nn.Module, pairs: list[tuple[Path, Path, bool]], device: torch.device, batch_size: int) -> tuple[float, float]:
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    emb = _embed(net, paths, device, batch_size)
    scores = np.array([float(emb[a] @ emb[b]) for a, b, _ in pairs])
    return best_threshold_accuracy(scores, np.array([same for _, _, same in pairs]))


def load_val_pairs(cfg: ValConfig) -> list[Pair]:
    assert cfg.pairs is not None and cfg.root is not None
    pairs = read_lfw_pairs(resolve_path(cfg.pairs), resolve_path(cfg.root))
    if cfg.folds:
        n_folds = max(p.fold for p in pairs) + 1
        bad = [f for f in cfg.folds if not 1 <= f <= n_folds]
        if bad:
            raise BfmError(f"val.folds: fold {bad[0]} is not in 1..{n_folds}")
        wanted = {f - 1 for f in cfg.folds}
        pairs = [p for p in pairs if p.fold in wanted]
    if cfg.max_pairs is not None and len(pairs) > cfg.max_pairs:
        stride = len(pairs) / cfg.max_pairs  # spread over folds and over same/different pairs
        pairs = [pairs[int(i * stride)] for i in range(cfg.max_pairs)]
    missing = [p for pair in pairs for p in (pair.left, pair.right) if not p.is_file()]
    if missing:
        raise BfmError(f"validation image not found: {missing[0]}")
    return pairs


def validate(nets: dict[str, nn.Module], pairs: list[Pair], cfg: ValConfig, device: torch.device) -> dict[str, float]:
    """Best-threshold accuracies: E_F on unmasked pairs; E_P (E_F for baselines) on masked-masked pairs."""
    results: dict[str, float] = {}
    # Remember every submodule's mode: training keeps some BatchNorm layers in eval mode on purpose.
    modes = [(m, m.training) for net in nets.values() for m in net.modules()]
    for net in nets.values():
        net.eval()
    try:
        plain = [(p.left, p.right, p.same) for p in pairs]
        results["val_unmasked_acc"], results["val_unmasked_threshold"] = _score(nets["full"], plain, device, cfg.batch_size)
        if cfg.masked_root:
            root = resolve_path(cfg.masked_root)
            masked = []
            for p in pairs:
                a, b = _twin(root, p.left), _twin(root, p.right)
                if a is not None and b is not None:
                    masked.append((a, b, p.same))
            if masked:
                net = nets.get("partial", nets["full"])
                results["val_masked_acc"], results["val_masked_threshold"] = _score(net, masked, device, cfg.batch_size)
                results["val_masked_pairs"] = float(len(masked))
    finally:
        for module, training in modes:
            module.training = training
    results["val_pairs"] = float(len(pairs))
    return results
