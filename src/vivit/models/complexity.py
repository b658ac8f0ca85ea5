"""Parameter and multiply-accumulate counts, the units of the paper's Table 2."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_params"]


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, video_shape: Sequence[int]) -> int:
    """Forward multiply-accumulates for one input of ``video_shape`` = (B, C, T, H, W).

    Counted by torch's FLOP counter (matmuls, convolutions and the two attention matmuls of
    SDPA; element-wise ops are ignored), halved because it counts a MAC as two FLOPs. The
    forward runs on the meta device whatever device ``net`` lives on (its parameters are swapped
    for meta tensors, nothing is copied or computed): torch has no FLOP formula for the CPU SDPA
    kernel, so a forward on the CPU would leave out the attention.
    """
    dtype = next(net.parameters()).dtype
    tensors = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    meta = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
    video = torch.empty(*video_shape, device="meta", dtype=dtype)
    was_training = net.training
    net.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            functional_call(net, meta, (video,))
    finally:
        net.train(was_training)
    return counter.get_total_flops() // 2
