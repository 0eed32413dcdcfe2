"""The training loop: one process or a torchrun job, resumable to the bit on CPU.

Determinism across a crash: data order and flips depend only on (seed, epoch) (``ResumableSampler``), the
torch RNG is reseeded from (seed, step, rank) before every step, the learning rate is a function of the step,
and a checkpoint holds the networks, heads, optimizer state and AMP scaler. Resuming from the checkpoint of
step k therefore replays steps k+1... exactly as the uninterrupted run did.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from bfm_deploy.atomic import atomic_write_text, remove_stale_temporaries_in
from bfm_deploy.errors import BfmError
from bfm_deploy.progress import progress

from ..checkpoint import (CHECKPOINT_DIR, CHECKPOINT_NAME, Checkpoint, capture_rng_state, find_latest_checkpoint,
                          load_checkpoint, restore_rng_state, save_checkpoint)
from ..data import ResumableSampler
from . import distributed
from .config import TrainConfig, resolve_path
from .dataset import build_dataset
from .distributed import weights_digest
from .nets import build_heads, build_nets, init_heads_from_class_means, set_train_mode, trainable_parameters
from .recipes import RecipeLoss
from .report import write_report
from .validation import load_val_pairs, validate

def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The paper's step schedule: lr * gamma^(milestones passed), milestones in epochs, evaluated per step."""
    passed = sum(step >= m * steps_per_epoch for m in config.optim.milestones)
    warmup = config.optim.warmup_steps
    scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return config.optim.lr * config.optim.gamma**passed * scale


@dataclass
class RunState:
    step: int = 0
    last_saved: int = -1


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.run_dir = resolve_path(config.run_dir)
        self.env = distributed.setup(config.device)
        self.use_amp = config.amp and self.env.device.type == "cuda"

    # ---- setup -------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg, env = self.config, self.env
        if cfg.batch_size % env.world_size:
            raise BfmError(f"batch_size {cfg.batch_size} does not split evenly over {env.world_size} processes")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP broadcasts rank 0's anyway)
        self.dataset = build_dataset(cfg)
        self.num_classes = int(getattr(self.dataset, "num_classes"))
        self.per_rank_batch = cfg.batch_size // env.world_size
        self.sampler = ResumableSampler(
            self.dataset,  # type: ignore[arg-type]
            num_replicas=env.world_size,
            rank=env.rank,
            seed=cfg.seed,
            batch_size=self.per_rank_batch,
            flip=cfg.data.flip,
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch
        if self.steps_per_epoch < 1:
            raise BfmError(
                f"{len(self.dataset)} training images give no full batch of {self.per_rank_batch} per process"  # type: ignore[arg-type]
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.nets = build_nets(cfg)
        self.heads = build_heads(cfg, self.num_classes, self.nets)
        self.recipe = RecipeLoss(cfg.recipe, self.nets, self.heads, cfg.loss).to(env.device)
        params = trainable_parameters({**self.nets, **{f"head.{k}": v for k, v in self.heads.items()}})
        if not params:
            raise BfmError("every parameter is frozen: nothing to train")
        self.params = [p for _, p in params]
        self.optimizer = torch.optim.SGD(
            self.params, lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.state = RunState()
        if not cfg.resume and find_latest_checkpoint(self.run_dir) is not None:
            raise BfmError(
                f"{self.run_dir} already holds checkpoints: pass --resume auto to continue, or choose another run_dir"
            )
        self._maybe_resume()
        if self.state.step == 0 and cfg.model.head_init == "class_means" and self.heads:
            init_heads_from_class_means(self.heads, self.nets, self.dataset, self.num_classes, self.env, cfg.data.workers)
        self.model: nn.Module = self.recipe
        if env.distributed:
            ids = [env.local_rank] if env.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.recipe, device_ids=ids)
        self.loader = DataLoader(
            self.dataset,
            batch_size=self.per_rank_batch,
            sampler=self.sampler,
            num_workers=cfg.data.workers,
            drop_last=True,
            pin_memory=env.device.type == "cuda",
        )
        self.val_pairs = load_val_pairs(cfg.val) if cfg.val.pairs and env.is_main else None

    def _maybe_resume(self) -> None:
        resume = self.config.resume
        if not resume:
            return
        if self.env.is_main:
            # A kill -9 during a checkpoint write leaves its temporary file (the rename never came), and the
            # next checkpoint has another name, so atomic_path's own clean-up never meets it.
            remove_stale_temporaries_in(self.run_dir / CHECKPOINT_DIR)
        path = find_latest_checkpoint(self.run_dir) if resume == "auto" else resolve_path(resume)
        if path is None:
            self._log(f"resume: auto: no checkpoint in {self.run_dir / CHECKPOINT_DIR}, starting from scratch")
            return
        ckpt = load_checkpoint(path)
        self._restore(ckpt, path)
        self._log(f"resumed from {path} at step {ckpt.step} (epoch {ckpt.epoch})")

    def _restore(self, ckpt: Checkpoint, path: Path) -> None:
        cfg = self.config
        if ckpt.recipe != cfg.recipe or ckpt.backbone != cfg.model.backbone:
            raise BfmError(
                f"{path.name} was trained as {ckpt.recipe}/{ckpt.backbone}, the config says {cfg.recipe}/{cfg.model.backbone}"
            )
        saved_spe = ckpt.trainer.get("steps_per_epoch")
        if saved_spe != self.steps_per_epoch:
            raise BfmError(
                f"{path.name} had {saved_spe} steps per epoch, this run has {self.steps_per_epoch}: "
                "the data set, batch size or process count changed"
            )
        from bfm_models import load_state_dict_checked

        for part, net in self.nets.items():
            if part not in ckpt.nets:
                raise BfmError(f"{path.name} has no {part}.* tensors")
            load_state_dict_checked(net, ckpt.nets[part], f"{path.name} [{part}]")
        for part, head in self.heads.items():
            if part not in ckpt.heads:
                raise BfmError(f"{path.name} has no head.{part}.* tensors (was the freezing configuration changed?)")
            load_state_dict_checked(head, ckpt.heads[part], f"{path.name} [head.{part}]")
        if ckpt.optimizer is None:
            raise BfmError(f"{path.name} holds no optimizer state; it cannot be resumed")
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
        except ValueError as exc:
            raise BfmError(f"{path.name}: optimizer state does not fit this run ({exc})") from None
        if self.use_amp and ckpt.trainer.get("scaler"):
            self.scaler.load_state_dict(ckpt.trainer["scaler"])
        if ckpt.trainer.get("rng"):
            restore_rng_state(ckpt.trainer["rng"])
        self.state = RunState(step=ckpt.step, last_saved=ckpt.step)

    # ---- bookkeeping -------------------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        if self.env.is_main:
            tqdm.write(message)

    def _save(self) -> None:
        self.state.last_saved = self.state.step
        if not self.env.is_main:
            return
        cfg = self.config
        folder = self.run_dir / CHECKPOINT_DIR
        step = self.state.step
        save_checkpoint(
            folder / f"step-{step:08d}.safetensors",
            nets=self.nets,
            heads=self.heads,
            optimizer=self.optimizer,
            backbone=cfg.model.backbone,
            recipe=cfg.recipe,
            config=cfg.to_dict(),
            epoch=step // self.steps_per_epoch,
            step=step,
            scheduler={
                "type": "multistep-epochs",
                "base_lr": cfg.optim.lr,
                "milestones": cfg.optim.milestones,
                "gamma": cfg.optim.gamma,
                "warmup_steps": cfg.optim.warmup_steps,
                "steps_per_epoch": self.steps_per_epoch,
                "last_step": step,
            },
            trainer={
                "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps,
                "world_size": self.env.world_size,
                "num_classes": self.num_classes,
                "scaler": self.scaler.state_dict() if self.use_amp else {},
                "rng": capture_rng_state(),
            },
        )
        old = sorted(
            (int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_NAME.match(p.name))
        )[: -cfg.keep_checkpoints]
        for _, p in old:
            p.unlink(missing_ok=True)

    def _prepare_metrics(self) -> Path:
        """metrics.jsonl without lines past the resumed step (they belong to the lost part of a killed run)."""
        path = self.run_dir / "metrics.jsonl"
        if self.env.is_main and path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the half-written last line of a killed run
                if isinstance(record, dict) and record.get("step", 0) <= self.state.step:
                    kept.append(line)
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        return path

    def _write_metrics(self, path: Path, record: dict[str, Any]) -> None:
        if self.env.is_main:
            with open(path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    # ---- the loop ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train to ``total_steps``; returns the last logged metrics."""
        try:
            self._setup()
            last = self._train()
            return last if self.env.is_main else {}
        finally:
            # The DDP wrapper's reducer holds the process group: left to interpreter shutdown, gloo's threads
            # are destroyed in no fixed order and the process can abort ("terminate called without an active
            # exception") after a finished run. Release it, then the group, while Python is fully alive.
            if getattr(self, "model", None) is not None:
                self.model = self.recipe
                gc.collect()
            distributed.teardown(self.env)

    def _train(self) -> dict[str, Any]:
        cfg, env, state = self.config, self.env, self.state
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        metrics_path = self._prepare_metrics()
        self._log(
            f"bfm-train: recipe {cfg.recipe}, {len(self.dataset)} images of {self.num_classes} identities, "  # type: ignore[arg-type]
            f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps, {env.world_size} process(es) on {env.device}, "
            f"mixed precision {'on' if self.use_amp else 'off'}"
        )
        bar = progress(total=self.total_steps, initial=state.step, enabled=env.is_main, unit="step", dynamic_ncols=True)
        last: dict[str, Any] = {}
        window_start, window_steps = time.perf_counter(), 0
        resumed_at_end = state.step >= self.total_steps  # nothing left to train or to validate
        while state.step < self.total_steps:
            epoch = state.step // self.steps_per_epoch
            self.sampler.set_epoch(epoch, start_batch=state.step % self.steps_per_epoch)
            set_train_mode(self.nets, cfg.model)
            for head in self.heads.values():
                head.train()
            for x, x_hat, y in self.loader:
                terms = self._step(x, x_hat, y)
                window_steps += 1
                if state.step % cfg.log_every == 0 or state.step == self.total_steps:
                    values = distributed.mean_over_ranks(env, torch.stack([t.detach().float() for t in terms.values()]))
                    elapsed = time.perf_counter() - window_start
                    last = {
                        "step": state.step,
                        "epoch": epoch,
                        "lr": float(f"{self.optimizer.param_groups[0]['lr']:.8g}"),
                        **{f"loss_{k}": round(float(v), 6) for k, v in zip(terms, values.tolist(), strict=True)},
                        "loss": round(float(values.sum()), 6),
                        "images_per_s": round(window_steps * cfg.batch_size / max(elapsed, 1e-9), 2),
                    }
                    if not torch.isfinite(values).all() and not self.use_amp:
                        raise BfmError(f"loss became {float(values.sum())} at step {state.step}; lower optim.lr")
                    self._write_metrics(metrics_path, last)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", img_s=f"{last['images_per_s']:.1f}")
                    window_start, window_steps = time.perf_counter(), 0
                bar.update(1)
                if state.step % cfg.checkpoint_every == 0:
                    self._save()
                if state.step >= self.total_steps:
                    break
            if state.step % self.steps_per_epoch == 0:  # a whole epoch is done
                if state.last_saved != state.step:
                    self._save()
                self._validate(metrics_path, epoch)
        if state.last_saved != state.step:
            self._save()
        if state.step % self.steps_per_epoch and not resumed_at_end:
            self._validate(metrics_path, state.step // self.steps_per_epoch)  # a run stopped by max_steps
        bar.close()
        self._check_ranks_agree(metrics_path)
        self._write_report()
        return last

    def _write_report(self) -> None:
        if self.env.is_main:
            write_report(self.run_dir)

    def _check_ranks_agree(self, metrics_path: Path) -> None:
        """After a torchrun job every rank must hold the same weights; a mismatch means a broken setup."""
        if not self.env.distributed:
            return
        import torch.distributed as dist

        # DDP copies rank 0's buffers (BatchNorm running statistics) to every rank at each forward pass, so
        # the other ranks' updates from the last step are dead values: finish with rank 0's, as DDP would.
        for module in [*self.nets.values(), *self.heads.values()]:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)
        digests: list[str | None] = [None] * self.env.world_size
        dist.all_gather_object(digests, weights_digest(self.nets, self.heads))
        self._write_metrics(metrics_path, {"step": self.state.step, "rank_weight_digests": digests})
        if len(set(digests)) != 1:
            raise BfmError(f"ranks ended with different weights (digests {', '.join(str(d)[:12] for d in digests)})")

    def _step(self, x: torch.Tensor, x_hat: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg, env, state = self.config, self.env, self.state
        device = env.device
        x, x_hat, y = (t.to(device, non_blocking=True) for t in (x, x_hat, y))
        lr = lr_at(cfg, state.step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Any randomness inside the networks (dropout) depends on the step only: exact replay after a resume.
        torch.manual_seed((cfg.seed * 1_000_003 + state.step) * 4096 + env.rank)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=self.use_amp):
            terms: dict[str, torch.Tensor] = self.model(x, x_hat, y)
        loss = torch.stack(list(terms.values())).sum()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the loss-scaled ones
            nn.utils.clip_grad_norm_(self.params, cfg.optim.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        state.step += 1
        return terms

    def _validate(self, metrics_path: Path, epoch: int) -> None:
        if self.val_pairs is not None:
            results = validate(self.nets, self.val_pairs, self.config.val, self.env.device)
            record = {"step": self.state.step, "epoch": epoch, **{k: round(v, 6) for k, v in results.items()}}
            self._write_metrics(metrics_path, record)
            self._log(json.dumps(record))
            self._write_report()  # a run killed later still has its curves so far
        if self.config.val.pairs:
            distributed.barrier(self.env)


def train(config: TrainConfig) -> dict[str, Any]:
    return Trainer(config).run()
