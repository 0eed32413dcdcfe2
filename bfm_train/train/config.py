"""Typed training configuration with the paper's defaults, loaded from YAML (``base:`` chains resolved by
``config_files``) with ``key=value`` overrides.

Defaults follow Sec. IV-A4: SGD, lr 0.1, momentum 0.9, weight decay 5e-4, batch 128, 100 epochs, lr / 10 at
epochs 30, 60 and 90, ArcFace s = 64, m = 0.5. Unknown keys and wrongly typed values are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bfm_deploy.contract import EMBEDDING_SIZE
from bfm_deploy.datasets import default_data_dir
from bfm_deploy.errors import BfmError

from ..data.augment import AugmentConfig
from .config_files import read_config_file

RECIPES = ("bfm", "baseline1", "baseline2")


@dataclass
class DataConfig:
    format: str = "folder"  # folder: root/<identity>/<image>; rec: insightface train.rec (+ train.idx)
    root: str = ""
    masked_root: str | None = None  # masked twin folder (or .rec); needed by recipes bfm and baseline2
    include_identities: list[str] | None = None
    exclude_identities: list[str] = field(default_factory=list)
    exclude_lfw_pairs: str | None = None  # an LFW pairs.txt whose folds below are left out of training
    exclude_lfw_folds: list[int] = field(default_factory=list)  # 1-based, e.g. [6, 7, 8, 9, 10]
    min_images: int = 1
    missing_masked: str = "skip"  # skip | error: an image whose masked twin is absent
    flip: bool = True
    workers: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # effects of real photos (off by default)
    # A bfm-real-masks folder whose train split joins the twins as unpaired real photos, for C alone (recipe bfm
    # with E_F and E_P frozen; bfm_train.data.real_masks), each real photo real_repeat times an epoch.
    real_masks: str | None = None
    real_repeat: int = 1


@dataclass
class NetConfig:
    init: str | None = None  # a weights file, a load_pretrained source (e.g. w600k_mbf) or "full" (copy E_F)
    frozen: bool = False  # freeze every parameter
    freeze_prefixes: list[str] = field(default_factory=list)  # freeze parameters whose name starts with one
    # every BatchNorm in eval mode: fine-tuning weights whose BN was folded away (w600k_mbf) or tiny batches
    bn_eval: bool = False


@dataclass
class ModelConfig:
    backbone: str = "r50"  # get_model name of E_F / E_P, or "module:callable" for a custom factory
    classifier_arch: str = "classifier"  # the mask classifier C (get_model name or "module:callable")
    embedding_size: int = EMBEDDING_SIZE
    classifier: NetConfig = field(default_factory=NetConfig)
    full: NetConfig = field(default_factory=NetConfig)
    partial: NetConfig = field(default_factory=NetConfig)
    frozen_bn_eval: bool = True  # keep BatchNorm layers whose parameters are all frozen in eval mode
    # ArcFace class centres: random (the paper, training from scratch) or class_means (fine-tuning: the mean
    # normalised embedding of each identity, so a pretrained extractor starts at a low loss instead of
    # being pushed around by a random head)
    head_init: str = "random"


@dataclass
class OptimConfig:
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [30, 60, 90])  # epochs where lr is multiplied by gamma
    gamma: float = 0.1
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps (0: none, as in the paper)
    # clip the global gradient norm (None: no clipping, as in the paper); ArcFace with s = 64 gives gradients
    # large enough to wreck pretrained layers in one step when fine-tuning
    clip_grad_norm: float | None = None


@dataclass
class LossConfig:
    s: float = 64.0
    m: float = 0.5
    w_mask: float = 1.0
    w_full: float = 1.0
    w_guided: float = 1.0
    # what E_P(x̂) is pulled towards: "partial" = E_P(x), Eq. 4 as printed; "full" = E_F(x), held fixed, so the
    # masked embedding keeps to the space the pretrained full-face extractor learnt from far more identities
    guided_target: str = "partial"
    w_partial: float = 1.0


@dataclass
class ValConfig:
    pairs: str | None = None  # LFW pairs.txt-style file; validation runs each epoch when set
    root: str | None = None  # image root of the pairs (unmasked)
    masked_root: str | None = None  # masked twins of the same images: also scores masked-masked pairs
    folds: list[int] = field(default_factory=list)  # 1-based folds to use; empty = all
    batch_size: int = 64
    max_pairs: int | None = None


@dataclass
class TrainConfig:
    recipe: str = "bfm"
    run_dir: str = "work_dirs/run"
    seed: int = 0
    epochs: int = 100
    max_steps: int | None = None  # stop after this many optimizer steps (quick runs)
    batch_size: int = 128  # global: split evenly over the processes of a torchrun job
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision; used on GPU only
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at each epoch end and at the end
    keep_checkpoints: int = 3
    resume: str | None = None  # "auto" (latest in run_dir) or a checkpoint path
    log_every: int = 10
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    val: ValConfig = field(default_factory=ValConfig)

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise BfmError(f"recipe must be one of {', '.join(RECIPES)}, not {self.recipe!r}")
        if self.data.format not in ("folder", "rec"):
            raise BfmError(f"data.format must be 'folder' or 'rec', not {self.data.format!r}")
        if not self.data.root:
            raise BfmError("data.root is not set")
        if self.recipe != "baseline1" and not self.data.masked_root:
            raise BfmError(f"recipe {self.recipe} needs data.masked_root (the masked twin of data.root)")
        for name in ("epochs", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise BfmError(f"{name} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise BfmError("max_steps must be >= 1")
        if self.model.head_init not in ("random", "class_means"):
            raise BfmError(f"model.head_init must be random or class_means, not {self.model.head_init!r}")
        if self.optim.clip_grad_norm is not None and self.optim.clip_grad_norm <= 0:
            raise BfmError("optim.clip_grad_norm must be > 0 (or null)")
        if self.optim.warmup_steps < 0:
            raise BfmError("optim.warmup_steps must be >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise BfmError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if bool(self.data.exclude_lfw_folds) != bool(self.data.exclude_lfw_pairs):
            raise BfmError("data.exclude_lfw_pairs and data.exclude_lfw_folds go together")
        if self.val.pairs and not self.val.root:
            raise BfmError("val.pairs needs val.root (the image folder of the pairs)")
        if self.model.partial.init == "full" and self.recipe != "bfm":
            raise BfmError("model.partial.init: full only applies to recipe bfm")
        if self.model.full.init == "full":
            raise BfmError("model.full.init cannot be 'full' (that means: copy E_F)")
        if self.loss.guided_target not in ("partial", "full"):
            raise BfmError(f"loss.guided_target must be partial or full, not {self.loss.guided_target!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_path(value: str) -> Path:
    """``~``, ``$VARS`` and ``${BFM_DATA}`` (defaulting to the shared data folder when unset) expanded."""
    if "BFM_DATA" in value and not os.environ.get("BFM_DATA"):
        value = value.replace("${BFM_DATA}", str(default_data_dir())).replace("$BFM_DATA", str(default_data_dir()))
    return Path(os.path.expanduser(os.path.expandvars(value)))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (the small set of types the config uses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except BfmError as exc:
                errors.append(str(exc))
        raise BfmError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise BfmError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        if not isinstance(value, list):
            raise BfmError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. an identity named 1234 in YAML
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise BfmError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: Any, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        section = prefix.rstrip(".") or "the top level"
        raise BfmError(f"unknown config key {prefix}{unknown[0]} (known keys in {section}: {', '.join(sorted(known))})")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def _apply_override(tree: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise BfmError(f"override {assignment!r} must look like key=value (e.g. optim.lr=0.01)")
    dotted, raw = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise BfmError(f"override {dotted}: {part} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise BfmError(f"override {dotted}: value {raw!r} is not valid YAML") from None


def config_from_dict(values: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    tree = dict(values)
    for assignment in overrides:
        _apply_override(tree, assignment)
    config: TrainConfig = _build(TrainConfig, tree)
    config.validate()
    return config


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config with its ``base:`` chain (or start from the defaults when ``path`` is None) and apply
    ``key=value`` overrides."""
    values = read_config_file(path) if path is not None else {}
    return config_from_dict(values, overrides)
