"""Build the networks and ArcFace heads of a recipe: initialisation, freezing, BatchNorm modes."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from bfm_deploy.errors import BfmError
from bfm_deploy.progress import progress

from .config import ModelConfig, NetConfig, TrainConfig, resolve_path
from .distributed import DistEnv

# Which networks and heads each recipe trains; a baseline stores ``full.`` only (ARCHITECTURE.md).
RECIPE_NETS = {"bfm": ("classifier", "full", "partial"), "baseline1": ("full",), "baseline2": ("full",)}
RECIPE_HEADS = {"bfm": ("full", "partial"), "baseline1": ("full",), "baseline2": ("full",)}


def _factory(name: str) -> Callable[[], nn.Module]:
    """A registry name (``create_model``) or ``package.module:callable`` (custom or test networks)."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return cast(Callable[[], nn.Module], getattr(importlib.import_module(module_name), attr))
        except (ImportError, AttributeError) as exc:
            raise BfmError(f"cannot import network factory {name!r}: {exc}") from None
    from bfm_models import create_model

    return lambda: create_model(name)


def build_net(arch: str) -> nn.Module:
    module = _factory(arch)()
    if not isinstance(module, nn.Module):
        raise BfmError(f"network factory {arch!r} returned {type(module).__name__}, not a torch module")
    return module


def initialise(module: nn.Module, source: str) -> None:
    from bfm_models import W600K_MBF, load_pretrained

    load_pretrained(module, source if source == W600K_MBF else resolve_path(source))


def apply_freezing(module: nn.Module, cfg: NetConfig, part: str) -> None:
    """``frozen`` freezes everything; ``freeze_prefixes`` freezes parameters by name prefix (e.g. early stages)."""
    names = [name for name, _ in module.named_parameters()]
    for prefix in cfg.freeze_prefixes:
        if not any(name.startswith(prefix) for name in names):
            raise BfmError(f"model.{part}.freeze_prefixes: no parameter name starts with {prefix!r} (e.g. {names[0]!r})")
    for name, param in module.named_parameters():
        if cfg.frozen or any(name.startswith(p) for p in cfg.freeze_prefixes):
            param.requires_grad_(False)


def is_frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


def set_train_mode(nets: Mapping[str, nn.Module], model_cfg: ModelConfig) -> None:
    """train() everywhere, then eval() for fully frozen networks and, optionally, BatchNorm with frozen affine.

    A frozen BatchNorm left in train mode would still drift its running statistics (and use batch statistics),
    changing the "frozen" features; pretrained weights with folded BN (w600k_mbf) are the extreme case.
    """
    for part, net in nets.items():
        all_eval = getattr(model_cfg, part).bn_eval
        net.train()
        if is_frozen(net):
            net.eval()
            continue
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                params = list(module.parameters(recurse=False))
                if all_eval or (model_cfg.frozen_bn_eval and params and not any(p.requires_grad for p in params)):
                    module.eval()


def build_nets(config: TrainConfig) -> dict[str, nn.Module]:
    """The recipe's networks, initialised (pretrained where configured) and frozen as configured."""
    mcfg = config.model
    nets: dict[str, nn.Module] = {}
    for part in RECIPE_NETS[config.recipe]:
        net_cfg: NetConfig = getattr(mcfg, part)
        net = build_net(mcfg.classifier_arch if part == "classifier" else mcfg.backbone)
        if net_cfg.init == "full":
            net.load_state_dict(nets["full"].state_dict())
        elif net_cfg.init:
            initialise(net, net_cfg.init)
        nets[part] = net
    for part, net in nets.items():
        apply_freezing(net, getattr(mcfg, part), part)
    return nets


def build_heads(config: TrainConfig, num_classes: int, nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """ArcFace layers LR_F / LR_P. The head of a fully frozen extractor is skipped: it would train nothing."""
    from bfm_train.losses import ArcFaceHead

    heads: dict[str, nn.Module] = {}
    for part in RECIPE_HEADS[config.recipe]:
        if is_frozen(nets[part]):
            continue
        heads[part] = ArcFaceHead(config.model.embedding_size, num_classes, s=config.loss.s, m=config.loss.m)
    return heads


def trainable_parameters(modules: dict[str, nn.Module]) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) in a fixed order: the optimizer's parameter indices depend on it across resumes."""
    out: list[tuple[str, Any]] = []
    for part in sorted(modules):
        out.extend((f"{part}.{n}", p) for n, p in modules[part].named_parameters() if p.requires_grad)
    return out


@torch.no_grad()
def init_heads_from_class_means(
    heads: Mapping[str, nn.Module],
    nets: Mapping[str, nn.Module],
    dataset: Dataset[Any],
    num_classes: int,
    env: DistEnv,
    workers: int,
) -> None:
    """Set each ArcFace head's class centres to the identities' mean normalised embeddings (eval mode).

    E_F's centres come from unmasked faces; E_P's from unmasked and masked faces, the two inputs it must map
    together. Every rank embeds its share of the data and the sums are added up, so all ranks agree.
    """
    indices = list(range(env.rank, len(dataset), env.world_size))  # type: ignore[arg-type]
    loader = DataLoader(Subset(dataset, indices), batch_size=64, num_workers=workers)
    modes = [(m, m.training) for net in nets.values() for m in net.modules()]
    for net in nets.values():
        net.eval()
    weights = {part: cast(nn.Parameter, head.weight) for part, head in heads.items()}  # ArcFaceHead: [M, D]
    sums = {part: torch.zeros(num_classes, w.shape[1], device=env.device) for part, w in weights.items()}
    bar = progress(loader, desc="class centres", enabled=env.is_main, leave=False)
    for x, x_hat, y in bar:
        x, y = x.to(env.device), y.to(env.device)
        for part in heads:
            inputs = [x] if part == "full" or x_hat.numel() == 0 else [x, x_hat.to(env.device)]
            for batch in inputs:
                with torch.autocast(device_type=env.device.type, enabled=env.device.type == "cuda"):
                    emb = nets[part](batch).float()
                sums[part].index_add_(0, y, nn.functional.normalize(emb, dim=1))
    for module, training in modes:
        module.training = training
    for part, weight in weights.items():
        total = sums[part]
        if env.distributed:
            import torch.distributed as dist

            dist.all_reduce(total)
        empty = total.norm(dim=1) == 0  # a class without images keeps its random centre
        weight.data[~empty] = nn.functional.normalize(total[~empty], dim=1).to(weight.dtype)
