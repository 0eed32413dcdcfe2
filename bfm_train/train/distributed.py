"""One process or a torchrun job: rank, world size and device from the environment torchrun sets."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from bfm_deploy.errors import BfmError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> DistEnv:
    """Initialise the process group under torchrun (NCCL on GPU, gloo on CPU); a no-op for one process."""
    if device == "cuda" and not torch.cuda.is_available():
        raise BfmError("device: cuda requested but no CUDA GPU is available")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise BfmError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        if env.device.type == "cuda":
            dist.barrier(device_ids=[env.local_rank])
        else:
            dist.barrier()


def mean_over_ranks(env: DistEnv, values: torch.Tensor) -> torch.Tensor:
    if env.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= env.world_size
    return values


def weights_digest(nets: dict[str, nn.Module], heads: dict[str, nn.Module]) -> str:
    """sha256 over every network and head tensor, in sorted checkpoint-key order (as ``tensors_digest`` of a checkpoint)."""
    tensors = {f"{part}.{k}": v for part, net in nets.items() for k, v in net.state_dict().items()}
    tensors.update({f"head.{part}.{k}": v for part, head in heads.items() for k, v in head.state_dict().items()})
    return tensors_digest(tensors)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
