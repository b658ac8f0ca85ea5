"""Clip transforms: uint8 frames ``(T, H, W, C)`` in, a normalised model input ``(C, T, H, W)`` out.

Three stages, each with one set of random parameters for the whole clip (every frame gets the same crop,
flip, colour jitter and RandAugment ops):

1. geometry (:class:`ClipGeometry`), in the loader: the crop box, scale jitter included, is drawn in the
   source frame's pixels and only that region is resized, in uint8; then the flip;
2. photometric (:class:`~vivit.data.photometric.Photometric`): colour jitter and RandAugment, drawn in the loader
   (so they follow the clip's seed) and applied there or, batched, on the GPU after the transfer
   (``data.photometric_on``);
3. normalisation: ``(x / 255 - mean) / std``, the only step in float.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from vivit.data.photometric import Photometric, PhotometricParams, finish_clips


class ClipGeometry:
    """Which region of the frames becomes the ``crop_size`` square, and the flip: uint8 ``(T, C, H, W)`` in and out.

    Training follows DMVR: short side to ``min_resize`` (None: kept), height and width scaled by independent
    factors from U[``scale_jitter``] (None: 1), a random ``crop_size`` crop of that, a horizontal flip with
    probability ``hflip_prob``. Evaluation: short side to ``min_resize``, then crop ``index`` of ``count``
    (:meth:`spatial_offsets`). The crop is drawn on the resized frame's grid but taken from the source:
    only its region (rounded to whole source pixels, under half a pixel off) is resized, with antialiasing.
    A resized frame smaller than the crop is resized whole and zero-padded, as ``RandomCrop(pad_if_needed)``
    and ``CenterCrop`` do.
    """

    def __init__(
        self,
        train: bool,
        crop_size: int,
        min_resize: int | None = None,
        scale_jitter: Sequence[float] | None = None,
        hflip_prob: float = 0.0,
        crop: tuple[int, int] = (0, 1),
    ) -> None:
        if not 0 <= crop[0] < crop[1]:
            raise ValueError(f"crop index must be in [0, {crop[1]}), got {crop[0]}")
        self.train, self.size, self.min_resize = train, crop_size, min_resize
        self.scale_jitter = None if scale_jitter is None else (float(scale_jitter[0]), float(scale_jitter[1]))
        self.hflip_prob, self.crop = hflip_prob, crop

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the frame would be resized to before the crop: DMVR's ``resize_smallest`` (as torchvision's
        ``Resize(int)``) then, in training, ``scale_jitter_augm``'s two factors (drawn here)."""
        if self.train and self.scale_jitter is not None:
            base = 1.0 if self.min_resize is None else self.min_resize / min(height, width)
            factors = torch.empty(2).uniform_(*self.scale_jitter).tolist()
            return max(1, round(height * base * factors[0])), max(1, round(width * base * factors[1]))
        if self.min_resize is None:
            return height, width
        short, long = sorted((height, width))
        long = int(self.min_resize * long / short)
        return (self.min_resize, long) if height <= width else (long, self.min_resize)

    def spatial_offsets(self, height: int, width: int) -> tuple[int, int]:
        """Evaluation crop ``index`` of ``count``: evenly spaced along the long side and centred on the short one
        (``count=3``: left/centre/right, or top/middle/bottom for portrait frames, as Scenic's
        ``three_spatial_crops``; ``count=1``: the centre crop, as ``CenterCrop``)."""
        index, count = self.crop

        def start(length: int, along: bool) -> int:
            if along and count > 1:
                return round(index * (length - self.size) / (count - 1))
            return round((length - self.size) / 2)

        return start(height, along=height > width), start(width, along=height <= width)

    def __call__(self, video: Tensor) -> Tensor:
        height, width = video.shape[-2:]
        resized = self.resized_size(height, width)
        if min(resized) < self.size:  # padding needed: the small frame whole, as before the crop-first path
            video = F.resize(video, list(resized), antialias=True) if resized != (height, width) else video
            if self.train:
                video = v2.RandomCrop(self.size, pad_if_needed=True)(video)
            else:
                video = F.center_crop(video, [max(resized[0], self.size), max(resized[1], self.size)])  # zero-pads
                video = F.crop(video, *self.spatial_offsets(*video.shape[-2:]), self.size, self.size)
        else:
            if self.train:
                top, left = (int(torch.randint(side - self.size + 1, ())) for side in resized)
            else:
                top, left = self.spatial_offsets(*resized)
            video = self.crop_resized(video, (top, left), resized)
        if self.train and self.hflip_prob > 0 and float(torch.rand(())) < self.hflip_prob:
            video = F.horizontal_flip(video)
        return video

    def crop_resized(self, video: Tensor, corner: tuple[int, int], resized: tuple[int, int]) -> Tensor:
        """The ``crop_size`` square at ``corner`` of ``video`` resized to ``resized``, resizing only its region."""
        if resized == tuple(video.shape[-2:]):
            return video[..., corner[0] : corner[0] + self.size, corner[1] : corner[1] + self.size]
        box = []
        for start, source, target in zip(corner, video.shape[-2:], resized, strict=True):
            length = min(max(1, round(self.size * source / target)), source)
            box.append((min(round(start * source / target), source - length), length))
        (top, height), (left, width) = box
        region = video[..., top : top + height, left : left + width]
        return F.resize(region, [self.size, self.size], antialias=True)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(train={self.train}, crop_size={self.size}, min_resize={self.min_resize}, "
            f"scale_jitter={self.scale_jitter}, hflip_prob={self.hflip_prob}, crop={self.crop})"
        )


class ClipTransform:
    """Geometry, photometric augmentation and normalisation of a clip, with one set of random draws for all its
    frames. A class rather than a closure so that it pickles into spawned DataLoader workers.

    ``transform(frames)`` runs all three: ``(T, H, W, C)`` uint8 in, ``(C, T, H, W)`` float out.
    ``transform.prepare(frames)`` stops before the photometric ops and returns the uint8 ``(C, T, H, W)`` clip
    and their draws, for :func:`finish_clips` to complete on a batch, on the GPU.
    """

    def __init__(
        self, geometry: ClipGeometry, photometric: Photometric, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.geometry, self.photometric = geometry, photometric
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def prepare(self, frames: np.ndarray | Tensor) -> tuple[Tensor, PhotometricParams | None]:
        video = self.geometry(torch.as_tensor(frames).permute(0, 3, 1, 2))  # (T, C, H, W) uint8
        params = self.photometric.draw(*video.shape[-2:]) if self.photometric else None
        return video.permute(1, 0, 2, 3), params  # (C, T, H, W)

    def finish(self, video: Tensor, params: Sequence[PhotometricParams | None]) -> Tensor:
        return finish_clips(video, params, self.photometric, self.mean, self.std)

    def __call__(self, frames: np.ndarray | Tensor) -> Tensor:
        video, params = self.prepare(frames)
        return self.finish(video[None], [params])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.geometry}, {self.photometric}, mean={self.mean}, std={self.std})"


def clip_transform(
    train: bool,
    *,
    crop_size: int,
    min_resize: int | None = None,
    scale_jitter: Sequence[float] | None = None,
    hflip_prob: float = 0.5,
    colour_jitter_prob: float = 0.0,
    colour_drop_prob: float = 0.0,
    randaugment_layers: int = 0,
    randaugment_magnitude: int | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    crop: tuple[int, int] = (0, 1),
) -> ClipTransform:
    """ViViT's pipeline. Training: short side to ``min_resize``, height and width scaled by factors from
    ``scale_jitter`` (e.g. ``(0.9, 1.33)``; None: off), random ``crop_size`` crop, horizontal flip, colour
    jitter (:data:`COLOUR_JITTER`) with probability ``colour_jitter_prob``, greyscale with probability
    ``colour_drop_prob``, RandAugment
    (:class:`ClipRandAugment`; off when ``randaugment_layers`` is 0 or ``randaugment_magnitude`` is 0 or None).
    Evaluation: short side to ``min_resize``, then crop j of S spatial views for ``crop=(j, S)`` (the
    default is the centre crop). Then ``(x / 255 - mean) / std`` (0.5/0.5 gives [-1, 1]).
    """
    if not train:
        return ClipTransform(ClipGeometry(False, crop_size, min_resize, crop=crop), Photometric(), mean, std)
    geometry = ClipGeometry(True, crop_size, min_resize, scale_jitter, hflip_prob)
    photometric = Photometric(colour_jitter_prob, colour_drop_prob, randaugment_layers, randaugment_magnitude)
    return ClipTransform(geometry, photometric, mean, std)
