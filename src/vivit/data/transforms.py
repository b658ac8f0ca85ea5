"""Clip transforms: uint8 frames ``(T, H, W, C)`` in, a normalised model input ``(C, T, H, W)`` out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2


class ClipTransform:
    """Resize / crop / flip a clip with one set of random parameters for all its frames, then normalise.

    A class rather than a closure so that it pickles into spawned DataLoader workers.
    """

    def __init__(self, transforms: v2.Transform) -> None:
        self.transforms = transforms

    def __call__(self, frames: np.ndarray | Tensor) -> Tensor:
        video = tv_tensors.Video(torch.as_tensor(frames).permute(0, 3, 1, 2))  # (T, C, H, W) uint8
        return self.transforms(video).permute(1, 0, 2, 3).contiguous()  # (C, T, H, W) float

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


def clip_transform(
    train: bool,
    *,
    crop_size: int,
    min_resize: int | None = None,
    hflip_prob: float = 0.5,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> ClipTransform:
    """ViViT's pipeline: short side to ``min_resize``, random (train) or centre (eval) ``crop_size`` crop,
    horizontal flip in training only, then ``(x / 255 - mean) / std`` (0.5/0.5 gives [-1, 1]).

    Crops larger than the frame are zero-padded, in training as in evaluation.
    """
    steps: list[v2.Transform] = []
    if min_resize is not None:
        steps.append(v2.Resize(min_resize, antialias=True))
    if train:
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True))
        if hflip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(hflip_prob))
    else:
        steps.append(v2.CenterCrop(crop_size))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return ClipTransform(v2.Compose(steps))
