"""Training checkpoints in the ``bfm-checkpoint/1`` safetensors layout of ARCHITECTURE.md (no pickle).

Tensors: ``classifier.* / full.* / partial.*`` (networks), ``head.full.* / head.partial.*`` (ArcFace layers),
``optimizer.<param index>.<state name>`` (optimizer state; a non-tensor state value such as a step count is
stored as a 0-d tensor and listed in the ``optimizer_scalars`` metadata so it comes back as a Python number).
Metadata (strings): ``format``, ``backbone``, ``recipe``, ``config``, ``epoch``, ``step``, ``optimizer``
(JSON param_groups), ``scheduler`` (JSON) and ``trainer`` (JSON: RNG states, AMP scaler, sampler position).
The file is written atomically, so a kill at any moment leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import base64
import re
import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bfm_deploy.atomic import atomic_path
from bfm_deploy.errors import BfmError
from bfm_train.system import CHECKPOINT_FORMAT  # one definition of the format tag, shared with BFMSystem

NET_PARTS = ("classifier", "full", "partial")
HEAD_PARTS = ("full", "partial")


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns: tensors grouped by part, metadata decoded."""

    backbone: str
    recipe: str
    epoch: int
    step: int
    config: dict[str, Any]
    nets: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    heads: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None  # a torch optimizer state_dict, ready for load_state_dict
    scheduler: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    # clone: safetensors refuses tensors that share storage (tied or viewed parameters)
    return tensor.detach().to("cpu").contiguous().clone()


def _flatten_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str], list[Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: list[str] = []
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            key = f"optimizer.{int(index)}.{name}"
            if value is None:
                continue  # e.g. SGD's momentum_buffer before the first step
            if isinstance(value, torch.Tensor):
                tensors[key] = _cpu(value)
            elif isinstance(value, (bool, int, float)):
                tensors[key] = torch.tensor(value, dtype=torch.float64)
                scalars.append(key)
            else:
                raise BfmError(f"optimizer state {name!r} of type {type(value).__name__} cannot be stored")
    return tensors, scalars, list(state_dict["param_groups"])


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    nets: Mapping[str, nn.Module],
    heads: Mapping[str, nn.Module] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    backbone: str,
    recipe: str,
    config: Mapping[str, Any],
    epoch: int,
    step: int,
    scheduler: Mapping[str, Any] | None = None,
    trainer: Mapping[str, Any] | None = None,
) -> Path:
    """Write one checkpoint file atomically and return its path."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for part, module in nets.items():
        if part not in NET_PARTS:
            raise BfmError(f"unknown network part {part!r} (expected one of {', '.join(NET_PARTS)})")
        tensors.update({f"{part}.{k}": _cpu(v) for k, v in module.state_dict().items()})
    for part, module in (heads or {}).items():
        if part not in HEAD_PARTS:
            raise BfmError(f"unknown head {part!r} (expected one of {', '.join(HEAD_PARTS)})")
        tensors.update({f"head.{part}.{k}": _cpu(v) for k, v in module.state_dict().items()})
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "backbone": backbone,
        "recipe": recipe,
        "config": json.dumps(config, sort_keys=True),
        "epoch": str(int(epoch)),
        "step": str(int(step)),
        "scheduler": json.dumps(dict(scheduler or {}), sort_keys=True),
        "trainer": json.dumps(dict(trainer or {}), sort_keys=True),
    }
    if optimizer is not None:
        opt_tensors, scalars, groups = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        metadata["optimizer"] = json.dumps(groups)
        metadata["optimizer_scalars"] = json.dumps(scalars)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _json(meta: Mapping[str, str], key: str, path: Path, default: Any) -> Any:
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise BfmError(f"{path.name}: metadata {key!r} is not valid JSON") from None


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """Read a ``bfm-checkpoint/1`` file written by ``save_checkpoint`` (tensors on ``device``)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise BfmError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise BfmError(f"{path.name} is not a {CHECKPOINT_FORMAT} file (format={meta.get('format')!r})")
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except SafetensorError as exc:
        raise BfmError(f"cannot read {path.name} as safetensors: {exc}") from None
    try:
        epoch, step = int(meta["epoch"]), int(meta["step"])
        backbone, recipe = meta["backbone"], meta["recipe"]
    except (KeyError, ValueError):
        raise BfmError(f"{path.name}: metadata lacks a valid backbone/recipe/epoch/step") from None
    ckpt = Checkpoint(
        backbone=backbone,
        recipe=recipe,
        epoch=epoch,
        step=step,
        config=_json(meta, "config", path, {}),
        scheduler=_json(meta, "scheduler", path, {}),
        trainer=_json(meta, "trainer", path, {}),
    )
    opt_state: dict[int, dict[str, Any]] = {}
    scalars = set(_json(meta, "optimizer_scalars", path, []))
    for key, tensor in tensors.items():
        prefix, _, rest = key.partition(".")
        if prefix in NET_PARTS:
            ckpt.nets.setdefault(prefix, {})[rest] = tensor
        elif prefix == "head":
            part, _, name = rest.partition(".")
            ckpt.heads.setdefault(part, {})[name] = tensor
        elif prefix == "optimizer":
            index, _, name = rest.partition(".")
            opt_state.setdefault(int(index), {})[name] = tensor.item() if key in scalars else tensor
        else:
            raise BfmError(f"{path.name}: unexpected tensor {key!r}")
    if "optimizer" in meta:
        ckpt.optimizer = {"state": opt_state, "param_groups": _json(meta, "optimizer", path, [])}
    return ckpt


# RNG states travel as JSON (base64 for the byte tensors) so that no pickle is ever needed.


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": _b64(torch.get_rng_state()), "python": None, "numpy": None}
    version, internal, gauss = random.getstate()
    state["python"] = [version, list(internal), gauss]
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state["numpy"] = [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(_unb64(state["torch"]))
    if state.get("python"):
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if state.get("numpy"):
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if state.get("cuda") and torch.cuda.is_available():
        states = [_unb64(s) for s in state["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.safetensors$")


def find_latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the highest step in ``run_dir/checkpoints``, or None."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    return max(found)[1] if found else None
