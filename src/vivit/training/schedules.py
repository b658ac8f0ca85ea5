"""Learning-rate schedules, stepped once per optimiser step."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["cosine_with_warmup"]


def cosine_with_warmup(
    optimizer: Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 2.5,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """ViViT's schedule: linear warm-up over ``warmup_epochs``, then cosine decay to
    ``min_lr_ratio`` × base LR at ``total_steps`` (the paper: 2.5 epochs, decay to 0)."""
    warmup = min(int(warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
