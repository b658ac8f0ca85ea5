"""Parameter and multiply-accumulate counts, the units of the paper's Table 2."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_params"]


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, video_shape: Sequence[int]) -> int:
    """Forward multiply-accumulates for one input of ``video_shape`` = (B, C, T, H, W).

    Counted by torch's FLOP counter (matmuls, convolutions and the two attention matmuls of
    SDPA; element-wise ops are ignored), halved because it counts a MAC as two FLOPs. Runs on
    whatever device ``net`` lives on; build the net under ``torch.device("meta")`` to count
    a large model without memory or compute.
    """
    param = next(net.parameters())
    video = torch.empty(*video_shape, device=param.device, dtype=param.dtype)
    was_training = net.training
    net.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(video)
    net.train(was_training)
    return counter.get_total_flops() // 2
