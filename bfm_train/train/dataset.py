"""The training set a config describes: identity folders or RecordIO, with the identity filters applied."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch.utils.data import Dataset

from bfm_deploy.datasets import lfw_identities_in_folds, read_lfw_pairs
from bfm_deploy.errors import BfmError

from ..data import PairedFolderDataset, RecordDataset
from ..data.real_masks import JoinedPairs, RealMaskPairs
from .config import TrainConfig, resolve_path


def build_dataset(config: TrainConfig) -> Dataset[Any]:
    data, model = config.data, config.model
    if data.real_masks is not None and (config.recipe != "bfm" or not (model.full.frozen and model.partial.frozen)):
        raise BfmError("data.real_masks trains the mask classifier alone: it needs recipe bfm with model.full.frozen "
                       "and model.partial.frozen (real photos have no masked twin and no identity label)")
    twins = _twin_dataset(config)
    if data.real_masks is None:
        return twins
    return JoinedPairs(twins, RealMaskPairs(resolve_path(data.real_masks), "train", data.real_repeat, data.augment))


def _twin_dataset(config: TrainConfig) -> Dataset[Any]:
    data = config.data
    augment = data.augment
    if augment.restyle_fabrics:
        folder = resolve_path(augment.restyle_fabrics)
        if not folder.is_dir():
            raise BfmError(f"data.augment.restyle_fabrics: {folder} is not a folder")
        augment = replace(augment, restyle_fabrics=str(folder))
    masked = data.masked_root if config.recipe != "baseline1" else None
    exclude = set(data.exclude_identities)
    if data.exclude_lfw_pairs:
        pairs = read_lfw_pairs(resolve_path(data.exclude_lfw_pairs), resolve_path(data.root))
        n_folds = max(p.fold for p in pairs) + 1
        bad = [f for f in data.exclude_lfw_folds if not 1 <= f <= n_folds]
        if bad:
            raise BfmError(f"data.exclude_lfw_folds: fold {bad[0]} is not in 1..{n_folds}")
        exclude |= lfw_identities_in_folds(pairs, {f - 1 for f in data.exclude_lfw_folds})
    if data.format == "rec":
        if exclude or data.include_identities is not None or data.min_images > 1:
            raise BfmError("identity include/exclude lists and min_images apply to data.format: folder only")
        return RecordDataset(resolve_path(data.root), None if masked is None else resolve_path(masked), augment)
    return PairedFolderDataset(
        resolve_path(data.root),
        None if masked is None else resolve_path(masked),
        include=data.include_identities,
        exclude=exclude,
        min_images=data.min_images,
        missing_masked=data.missing_masked,
        augment=augment,
    )
