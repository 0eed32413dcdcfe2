"""Parameter and multiply-accumulate counts (torch.utils.flop_counter)."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from bfm_deploy.contract import INPUT_SHAPE


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not (the frozen ``features.weight`` of an IResNet counts)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, ...] = (1, *INPUT_SHAPE)) -> int:
    """Multiply-accumulates of one forward pass at ``input_size``.

    FlopCounterMode counts only matrix-like ops (convolutions, linear layers, matmuls) as 2 FLOPs per
    multiply-accumulate, so MACs = FLOPs / 2; normalisation, activations and additions are not counted,
    the usual convention of published MAC figures. The pass runs on the "meta" device with stand-in
    parameters, so it costs no arithmetic and leaves the model's weights and mode untouched.
    """
    was_training = model.training
    # eval: a training-mode BatchNorm1d rejects a batch of one, and the count does not depend on the mode
    model.eval()
    try:
        stand_ins = {name: torch.empty_like(t, device="meta") for name, t in model.state_dict(keep_vars=True).items()}
        x = torch.empty(input_size, device="meta")
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            functional_call(model, stand_ins, (x,))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
