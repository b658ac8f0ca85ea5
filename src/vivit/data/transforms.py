"""Clip transforms: uint8 frames ``(T, H, W, C)`` in, a normalised model input ``(C, T, H, W)`` out.

torchvision's v2 transforms treat a ``(T, C, H, W)`` ``Video`` as one sample: each random parameter
(crop, flip, scale, colour, RandAugment op and magnitude) is drawn once and applied to every frame.
Everything before normalisation works on uint8.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

# DMVR's colour augmentation (ViViT's Kinetics configs, vivit_paper.md §4). torchvision's brightness is a
# factor in [1 - 32/255, 1 + 32/255]; DMVR adds a delta of at most 32/255 instead.
COLOUR_JITTER = dict(brightness=32 / 255, contrast=(0.6, 1.4), saturation=(0.6, 1.4), hue=0.2)


class ClipTransform:
    """Resize / crop / flip / colour a clip with one set of random parameters for all its frames, then normalise.

    A class rather than a closure so that it pickles into spawned DataLoader workers.
    """

    def __init__(self, transforms: v2.Transform) -> None:
        self.transforms = transforms

    def __call__(self, frames: np.ndarray | Tensor) -> Tensor:
        video = tv_tensors.Video(torch.as_tensor(frames).permute(0, 3, 1, 2))  # (T, C, H, W) uint8
        return self.transforms(video).permute(1, 0, 2, 3).contiguous()  # (C, T, H, W) float

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


class ScaleJitterResize(v2.Transform):
    """Short side to ``min_resize`` (None: kept), then height and width scaled by independent factors drawn
    from U[``scale``], in one resize: DMVR's ``resize_smallest`` followed by ``scale_jitter_augm``."""

    def __init__(self, min_resize: int | None, scale: Sequence[float]) -> None:
        super().__init__()
        self.min_resize, self.scale = min_resize, (float(scale[0]), float(scale[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = F.get_size(flat_inputs[0])
        base = 1.0 if self.min_resize is None else self.min_resize / min(height, width)
        factors = torch.empty(2).uniform_(*self.scale).tolist()
        return {"size": [max(1, round(side * base * f)) for side, f in zip((height, width), factors, strict=True)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


def _levels(num_bins: int, height: int, width: int) -> Tensor:
    return torch.arange(num_bins) / 10  # level / _MAX_LEVEL of tensorflow/models' augment.py


def _enhance(num_bins: int, height: int, width: int) -> Tensor:
    return _levels(num_bins, height, width) * 1.8 - 0.9  # torchvision applies 1 + m: factor 0.1 + 1.8 * level / 10


class ClipRandAugment(v2.RandAugment):
    """RandAugment as ViViT's code runs it (Scenic's ``video_ops``, after tensorflow/models' ``augment.py``).

    ``magnitude`` is the paper's: a level on TF-models' scale, nominally 0-10 (``_MAX_LEVEL``), which
    EPIC (15) and SSv2 (20) exceed. torchvision's own RandAugment cannot express that: its ``magnitude``
    indexes ``num_magnitude_bins`` values spread over ranges that end at TF's level 10 (default 31 bins:
    torchvision magnitude 3 * level, level 10 = bin 30, the last), and it flips the sign of the enhance
    factors at random (1 +- 0.9 * level / 10) where TF uses 0.1 + 1.8 * level / 10 (2.8 at level 15).
    So this subclass redefines the augmentation space: bin index = TF level, each op's argument as TF's
    ``level_to_arg``, and Scenic's ops: no Rotate, Shear or Translate; Invert, Cutout (one square, grey 128,
    at the same place in every frame) and SolarizeAdd added. Each layer picks one of the 11 ops or identity
    uniformly. Image statistics (contrast's mean, equalise and autocontrast histograms) are per frame, as
    torchvision computes them for videos; Scenic computes them over the clip.
    """

    _AUGMENTATION_SPACE = {
        "Identity": (lambda num_bins, height, width: None, False),
        "AutoContrast": (lambda num_bins, height, width: None, False),
        "Equalize": (lambda num_bins, height, width: None, False),
        "Invert": (lambda num_bins, height, width: None, False),
        "Posterize": (lambda *size: (_levels(*size) * 4).floor().clamp(max=8), False),  # bits kept
        "Solarize": (lambda *size: (_levels(*size) * 256).floor(), False),  # threshold; >= 256: no change
        "SolarizeAdd": (lambda *size: (_levels(*size) * 110).floor(), False),  # added below 128
        "Color": (_enhance, False),
        "Contrast": (_enhance, False),
        "Brightness": (_enhance, False),
        "Sharpness": (_enhance, False),
        "Cutout": (lambda *size: (_levels(*size) * 40).floor(), False),  # half the side of the square
    }

    def __init__(self, num_ops: int, magnitude: int) -> None:
        super().__init__(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=magnitude + 1)

    def _apply_image_or_video_transform(self, image: Any, transform_id: str, magnitude: float, **kwargs: Any) -> Any:
        if transform_id == "Solarize":
            return image if magnitude > 255 else F.solarize(image, threshold=magnitude)
        if transform_id == "SolarizeAdd":  # uint8
            added = (image.to(torch.int16) + int(magnitude)).clamp(0, 255).to(image.dtype)
            return tv_tensors.wrap(torch.where(image < 128, added, image), like=image)
        if transform_id == "Cutout":
            height, width = F.get_size(image)
            y, x = int(torch.randint(height, ())), int(torch.randint(width, ()))
            pad = int(magnitude)
            top, left = max(0, y - pad), max(0, x - pad)
            size = (min(height, y + pad) - top, min(width, x + pad) - left)
            return F.erase(image, top, left, *size, v=torch.tensor(128, dtype=image.dtype))
        return super()._apply_image_or_video_transform(image, transform_id, magnitude, **kwargs)


class SpatialCrop:
    """Square crop ``index`` of ``count`` of a ``(T, C, H, W)`` clip, for multi-view testing.

    The crops are evenly spaced along the long side and centred on the short one: with ``count=3``,
    left/centre/right, or top/middle/bottom for portrait frames (Scenic's ``three_spatial_crops``);
    ``count=1`` is the centre crop. A frame smaller than the crop is zero-padded first, as ``CenterCrop`` does.
    """

    def __init__(self, size: int, index: int = 0, count: int = 1) -> None:
        if not 0 <= index < count:
            raise ValueError(f"crop index must be in [0, {count}), got {index}")
        self.size, self.index, self.count = size, index, count

    def __call__(self, video: Tensor) -> Tensor:
        h, w = video.shape[-2:]
        if h < self.size or w < self.size:
            video = F.center_crop(video, [max(h, self.size), max(w, self.size)])  # zero-pads
            h, w = video.shape[-2:]
        top, left = self._start(h, along=h > w), self._start(w, along=h <= w)
        return F.crop(video, top, left, self.size, self.size)

    def _start(self, length: int, along: bool) -> int:
        """Offset on one axis: evenly spaced ``along`` the long side, centred otherwise (as ``CenterCrop``)."""
        if along and self.count > 1:
            return round(self.index * (length - self.size) / (self.count - 1))
        return round((length - self.size) / 2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, index={self.index}, count={self.count})"


def clip_transform(
    train: bool,
    *,
    crop_size: int,
    min_resize: int | None = None,
    scale_jitter: Sequence[float] | None = None,
    hflip_prob: float = 0.5,
    colour_jitter_prob: float = 0.0,
    randaugment_layers: int = 0,
    randaugment_magnitude: int | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    crop: tuple[int, int] = (0, 1),
) -> ClipTransform:
    """ViViT's pipeline. Training: short side to ``min_resize``, height and width scaled by factors from
    ``scale_jitter`` (e.g. ``(0.9, 1.33)``; None: off), random ``crop_size`` crop, horizontal flip, colour
    jitter (:data:`COLOUR_JITTER`) with probability ``colour_jitter_prob``, RandAugment
    (:class:`ClipRandAugment`; off when ``randaugment_layers`` is 0 or ``randaugment_magnitude`` is 0 or None).
    Evaluation: short side to ``min_resize``, then crop j of S spatial views for ``crop=(j, S)``
    (:class:`SpatialCrop`; the default is the centre crop). Then ``(x / 255 - mean) / std``
    (0.5/0.5 gives [-1, 1]).

    Crops larger than the frame are zero-padded, in training as in evaluation.
    """
    steps: list[v2.Transform] = []
    if train and scale_jitter is not None:
        steps.append(ScaleJitterResize(min_resize, scale_jitter))
    elif min_resize is not None:
        steps.append(v2.Resize(min_resize, antialias=True))
    if train:
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True))
        if hflip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(hflip_prob))
        if colour_jitter_prob > 0:
            steps.append(v2.RandomApply([v2.ColorJitter(**COLOUR_JITTER)], p=colour_jitter_prob))
        if randaugment_layers > 0 and randaugment_magnitude:
            steps.append(ClipRandAugment(randaugment_layers, randaugment_magnitude))
    else:
        steps.append(SpatialCrop(crop_size, *crop))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return ClipTransform(v2.Compose(steps))
