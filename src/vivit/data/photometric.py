"""The photometric stage of the clip transforms (:mod:`vivit.data.transforms`) and normalisation: colour jitter and
RandAugment, drawn per clip in the loader and applied to uint8 clips ``(B, T, C, H, W)`` on any device, in the
loader worker (a batch of one) or batched on the GPU after the transfer; then ``(x / 255 - mean) / std``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

# DMVR's colour augmentation (ViViT's Kinetics configs, vivit_paper.md §4). torchvision's brightness is a
# factor in [1 - 32/255, 1 + 32/255]; DMVR adds a delta of at most 32/255 instead.
COLOUR_JITTER = dict(brightness=32 / 255, contrast=(0.6, 1.4), saturation=(0.6, 1.4), hue=0.2)

CPU_CHUNK = 1  # frames per chunk of the photometric ops on a CPU
PhotometricParams = dict[str, Any]  # what Photometric.draw returns: colour jitter's and RandAugment's draws
HUE_SIXTHS = (5.0, 3.0, 1.0)  # red, green, blue: where each channel's ramp sits on the hue circle, in sixths


RandAugmentOp = tuple[str, float, tuple[int, int, int, int] | None]  # op, argument, Cutout's box (top, left, h, w)


def to_device(values: Sequence[float] | Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """A few host values as a tensor on ``device``, without waiting: a copy from pageable memory to a GPU first waits
    for all the work queued on it (a sync, which stalls the training step's pipeline); from pinned memory it is
    queued like a kernel."""
    tensor = torch.as_tensor(values, dtype=dtype)
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor.to(device)


def per_clip(values: Sequence[float], video: Tensor, dims: int) -> Tensor | float:
    """One float32 value per clip of ``video``, shaped to broadcast against a ``dims``-dimensional batch of clips (a
    number for a single clip: no tensor to make for each frame chunk); each value rounded from float64 once, as
    torchvision rounds a Python float argument."""
    rounded = [struct.unpack("f", struct.pack("f", value))[0] for value in values]
    if len(rounded) == 1:
        return rounded[0]
    return to_device(rounded, video.device).view(-1, *[1] * (dims - 1))


def blend(video: Tensor, other: Tensor, ratio: Sequence[float]) -> Tensor:
    """torchvision's uint8 ``_blend`` with one ratio per clip, on bytes held as floats (:meth:`Photometric.apply`):
    ``ratio * video + (1 - ratio) * other``, clamped and floored (as the conversion to uint8 truncates).
    torchvision fuses the multiply-add on some devices, so a value can round 1 off theirs (rarely)."""
    weight = per_clip(ratio, video, video.ndim)
    rest = per_clip([1.0 - r for r in ratio], video, video.ndim)
    return video.mul(weight).add_(other.mul(rest)).clamp_(0, 255).floor_()


def grey(video: Tensor) -> Tensor:
    """torchvision's uint8 luma ``(..., 1, H, W)`` of bytes held as floats ``(..., 3, H, W)``: floored, as its
    contrast and saturation take it."""
    r, g, b = video.unbind(-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(-3)


def adjust_hue(video: Tensor, hue_factor: float | Tensor) -> Tensor:
    """torchvision's ``F.adjust_hue`` of uint8 RGB ``(..., 3, H, W)`` (or of bytes held as floats, floored), the
    same up to float rounding (about one value in 10^4 is 1 off) and about three times as fast on a CPU;
    ``hue_factor`` a number or a tensor that broadcasts against ``(..., H, W)`` (one per clip).

    Turning the hue keeps each pixel's maximum and range. The hue ``h`` in sixths of the circle is the maximum's
    sector (red 0, green 2, blue 4) plus the other two channels' difference over the range; each channel then
    follows in closed form as ``max - range * clamp(2 - d, 0, 1)``, where ``d`` is the distance around the circle
    from ``h + n - 2`` to 0 (:data:`HUE_SIXTHS` ``n``). No ``torch.where`` or ``remainder``: on a CPU those are
    scalar loops, 5 to 15 times slower than the vectorised arithmetic here.
    """
    x = video.as_subclass(Tensor).to(torch.float32)
    r, g, b = x.unbind(-3)
    top = torch.maximum(torch.maximum(r, g), b)
    span = top - torch.minimum(torch.minimum(r, g), b)
    red = (top == r).to(torch.float32)  # the maximum's channel, red first, then green, as torchvision's
    green = (top == g).to(torch.float32).sub_(red).clamp_(min=0)
    red_green = r - g  # blue's difference, and the other two's relative to it
    hue = (g - b).sub_(red_green).mul_(red).add_((b - r).sub_(red_green).mul_(green)).add_(red_green)
    sector = red.mul_(-4).sub_(green, alpha=2).add_(4)
    turn = hue_factor if isinstance(hue_factor, Tensor) else to_device([hue_factor], x.device)
    turn = turn.mul(6).remainder_(6)  # in [0, 6)
    hue = hue.div_(span.clamp(min=1)).add_(sector).add_(turn)  # in [-1, 11)
    hue = hue.sub_(hue.ge(5).to(torch.float32).mul_(6))  # in [-1, 5)
    offset = to_device([n - 2 for n in HUE_SIXTHS], x.device).view(3, 1, 1)
    k = hue.unsqueeze(-3) + offset  # in [-3, 9), where the distance to 0 is min(|k|, |k - 6|)
    d = torch.minimum(k.abs(), k.sub_(6).abs_())
    weight = d.neg_().add_(2).clamp_(0, 1)
    scale = 255.999 / 255  # torchvision's float -> uint8 conversion: x * (255 + 1 - 1e-3), truncated
    out = torch.addcmul(top.mul_(scale).unsqueeze(-3), span.mul_(scale).unsqueeze(-3), weight, value=-1)
    return tv_tensors.wrap(out.to(torch.uint8) if video.dtype == torch.uint8 else out.floor_(), like=video)


# torchvision's ColorJitter's ops, in the order of the indices its draw gives them: (clips, factor per clip) -> clips,
# on bytes held as floats; each result is floored, as torchvision's uint8 ops truncate.
COLOUR_OPS: dict[str, Callable[[Tensor, Sequence[float]], Tensor]] = {
    "brightness": lambda video, f: video.mul(per_clip(f, video, video.ndim)).clamp_(0, 255).floor_(),
    "contrast": lambda video, f: blend(video, grey(video).mean((-3, -2, -1), keepdim=True), f),
    "saturation": lambda video, f: blend(video, grey(video), f),
    "hue": lambda video, f: adjust_hue(video, per_clip(f, video, video.ndim - 1)),
    # colour drop (DMVR's prob_color_drop): torchvision's Grayscale(3), the luma in all three channels
    "grey": lambda video, f: grey(video).expand_as(video).contiguous(),
}


class ClipRandAugment:
    """RandAugment as ViViT's code runs it (Scenic's ``video_ops``, after tensorflow/models' ``augment.py``).

    ``magnitude`` is the paper's: a level on TF-models' scale, nominally 0-10 (``_MAX_LEVEL``), which
    EPIC (15) and SSv2 (20) exceed. torchvision's own RandAugment cannot express that: its ``magnitude``
    indexes ``num_magnitude_bins`` values spread over ranges that end at TF's level 10 (default 31 bins:
    torchvision magnitude 3 * level, level 10 = bin 30, the last), and it flips the sign of the enhance
    factors at random (1 +- 0.9 * level / 10) where TF uses 0.1 + 1.8 * level / 10 (2.8 at level 15).
    So this class has its own op list (:data:`OPS`), each op's argument as TF's ``level_to_arg``, and Scenic's
    ops: no Rotate, Shear or Translate; Invert, Cutout (one square, grey 128, at the same place in every
    frame) and SolarizeAdd added. Each layer picks one of the 11 ops or identity uniformly. The ops are
    torchvision's functionals; image statistics (contrast's mean, equalise and autocontrast histograms) are per
    frame, as torchvision computes them for videos; Scenic computes them over the clip.

    :meth:`draw` makes every random choice (ops, Cutout's square); :meth:`run` applies one op to a batch of clips
    that drew it, on any device.
    """

    # op -> its argument at level L / 10 (float32, as the arguments were first computed here), None: it has none
    OPS: dict[str, Callable[[Tensor], Tensor] | None] = {
        "Identity": None,
        "AutoContrast": None,
        "Equalize": None,
        "Invert": None,
        "Posterize": lambda level: (level * 4).floor().clamp(max=8),  # bits kept
        "Solarize": lambda level: (level * 256).floor(),  # threshold; >= 256: no change
        "SolarizeAdd": lambda level: (level * 110).floor(),  # added below 128
        "Color": lambda level: level * 1.8 - 0.9,  # enhance factors 1 + this: 0.1 + 1.8 * L / 10
        "Contrast": lambda level: level * 1.8 - 0.9,
        "Brightness": lambda level: level * 1.8 - 0.9,
        "Sharpness": lambda level: level * 1.8 - 0.9,
        "Cutout": lambda level: (level * 40).floor(),  # half the side of the square
    }
    PLAIN = dict(Identity=lambda video: video, AutoContrast=F.autocontrast, Equalize=F.equalize, Invert=F.invert)
    ENHANCE = dict(Color=F.adjust_saturation, Contrast=F.adjust_contrast, Brightness=F.adjust_brightness)
    ENHANCE["Sharpness"] = F.adjust_sharpness

    def __init__(self, num_ops: int, magnitude: int) -> None:
        self.num_ops, self.magnitude = num_ops, magnitude

    def argument(self, op: str) -> float:
        """The argument of ``op`` at this magnitude (0 for an op without one)."""
        fn = self.OPS[op]
        return 0.0 if fn is None else float(fn(torch.tensor(float(self.magnitude)) / 10))

    def draw(self, height: int, width: int) -> list[RandAugmentOp]:
        """Each layer's op and argument, and for Cutout its box ``(top, left, height, width)``."""
        names = list(self.OPS)
        ops = []
        for _ in range(self.num_ops):
            op = names[int(torch.randint(len(names), ()))]
            magnitude = self.argument(op)
            box = None
            if op == "Cutout":
                y, x, pad = int(torch.randint(height, ())), int(torch.randint(width, ())), int(magnitude)
                top, left = max(0, y - pad), max(0, x - pad)
                box = (top, left, min(height, y + pad) - top, min(width, x + pad) - left)
            ops.append((op, magnitude, box))
        return ops

    @classmethod
    def run(cls, op: str, video: Tensor, draws: Sequence[tuple[float, tuple[int, int, int, int] | None]]) -> Tensor:
        """``op`` applied to uint8 clips ``(N, T, C, H, W)``, with each clip's ``(argument, Cutout box)`` draw (the
        argument is the magnitude's, the same for every clip)."""
        magnitude = draws[0][0]
        if op in cls.PLAIN:
            return cls.PLAIN[op](video)
        if op in cls.ENHANCE:
            return cls.ENHANCE[op](video, 1.0 + magnitude)
        if op == "Posterize":
            return F.posterize(video, bits=int(magnitude))
        if op == "Solarize":
            return video if magnitude > 255 else F.solarize(video, threshold=magnitude)
        if op == "SolarizeAdd":
            return torch.where(
                video < 128, (video.to(torch.int16) + int(magnitude)).clamp(0, 255).to(video.dtype), video
            )
        if op == "Cutout":
            video = video.clone()
            for clip, (_, (top, left, height, width)) in zip(video, draws, strict=True):
                clip[..., top : top + height, left : left + width] = 128
            return video
        raise ValueError(f"unknown RandAugment op {op!r}: one of {list(cls.OPS)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_ops={self.num_ops}, magnitude={self.magnitude})"


class Photometric:
    """Colour jitter (:data:`COLOUR_JITTER`, with probability ``colour_jitter_prob``), colour drop (greyscale, with
    probability ``colour_drop_prob``: DMVR's ``prob_color_drop``, drawn apart from the jitter, as there) then
    RandAugment (:class:`ClipRandAugment`; off when ``randaugment_layers`` or ``randaugment_magnitude`` is 0 or
    None).

    :meth:`draw` makes the clip's random choices, in the loader worker under the clip's seed; :meth:`apply`
    applies them to a batch of uint8 clips on any device, in the worker (a batch of one) or after the transfer to
    a GPU, with the same result.
    """

    def __init__(
        self,
        colour_jitter_prob: float = 0.0,
        colour_drop_prob: float = 0.0,
        randaugment_layers: int = 0,
        randaugment_magnitude: int | None = None,
    ) -> None:
        self.colour_jitter_prob, self.colour_drop_prob = colour_jitter_prob, colour_drop_prob
        self.colour_jitter = v2.ColorJitter(**COLOUR_JITTER)
        on = randaugment_layers > 0 and bool(randaugment_magnitude)
        self.randaugment = ClipRandAugment(randaugment_layers, randaugment_magnitude) if on else None

    def __bool__(self) -> bool:
        return self.colour_jitter_prob > 0 or self.colour_drop_prob > 0 or self.randaugment is not None

    def draw(self, height: int, width: int) -> PhotometricParams:
        colour = None
        if self.colour_jitter_prob > 0 and float(torch.rand(())) < self.colour_jitter_prob:
            colour = self.colour_jitter.make_params([])
        drop = self.colour_drop_prob > 0 and float(torch.rand(())) < self.colour_drop_prob  # no draw when off
        ops = self.randaugment.draw(height, width) if self.randaugment is not None else []
        return {"colour": colour, "drop": drop, "randaugment": ops}

    @staticmethod
    def steps(params: PhotometricParams | None) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        """A clip's colour ops: jitter's in their drawn order (an op whose factor it did not draw left out), then
        the drop to grey if drawn; and its RandAugment layers, each with its argument. Colour ops apply first."""
        if params is None:
            return [], []
        colour = []
        if params["colour"] is not None:
            for index in params["colour"]["fn_idx"].tolist():
                name = list(COLOUR_OPS)[index]
                if (factor := params["colour"][f"{name}_factor"]) is not None:
                    colour.append((name, float(factor)))
        if params.get("drop"):
            colour.append(("grey", None))
        return colour, [(op, (magnitude, box)) for op, magnitude, box in params["randaugment"]]

    def apply(self, video: Tensor, params: Sequence[PhotometricParams | None]) -> Tensor:
        """uint8 clips ``(B, T, C, H, W)``, each with its :meth:`draw` (None: none), augmented. Colour jitter works on
        the bytes held as floats, each op's result floored as torchvision's uint8 ops truncate, so the clips are
        converted once each way rather than once per op. On a GPU, batched: the k-th op of every clip that drew the
        same one runs as one call on those clips, so a batch costs a few dozen calls rather than hundreds. On a CPU,
        where a call costs little, clip by clip: every op works on each frame alone (its statistics too), so a clip
        goes through in chunks of :data:`CPU_CHUNK` frames, whose float intermediates stay in the cache (2.4 times
        as fast for one frame as for a clip of 32 at once). The result is the same either way."""
        colour, randaugment = zip(*map(self.steps, params), strict=True)  # each clip's plan, made once
        if video.device.type == "cpu" and video.shape[0] * video.shape[1] > CPU_CHUNK:
            # (B, C, T, H, W) in memory, as normalise and the model take clips, whatever the input's layout
            out = torch.empty_like(video.transpose(1, 2), memory_format=torch.contiguous_format).transpose(1, 2)
            for clip, clip_colour, clip_randaugment, into in zip(video, colour, randaugment, out, strict=True):
                for chunk, chunk_into in zip(clip.split(CPU_CHUNK), into.split(CPU_CHUNK), strict=True):
                    chunk_into.copy_(self.run_plans(chunk[None], [clip_colour], [clip_randaugment])[0])
            return out
        return self.run_plans(video, colour, randaugment)

    @classmethod
    def run_plans(
        cls, video: Tensor, colour: Sequence[list[tuple[str, Any]]], randaugment: Sequence[list[tuple[str, Any]]]
    ) -> Tensor:
        """Each clip's colour steps (jitter, then drop; on the clips as floats), then its RandAugment steps (on
        uint8)."""
        if any(colour):
            as_floats = video.to(torch.float32, memory_format=torch.contiguous_format)  # planes: the ops run faster
            video = cls.run_grouped(as_floats, colour, COLOUR_OPS.__getitem__).to(torch.uint8)
        return cls.run_grouped(video, randaugment, lambda op: partial(ClipRandAugment.run, op))

    @staticmethod
    def run_grouped(
        video: Tensor, plans: Sequence[list[tuple[str, Any]]], ops: Callable[[str], Callable[[Tensor, list], Tensor]]
    ) -> Tensor:
        """Each clip's ``plan`` of ``(op, argument)`` steps applied, where ``ops`` gives an op's function of
        ``(clips, their arguments)``: the k-th steps of all clips that drew the same op as one call."""
        given = video
        for k in range(max(map(len, plans), default=0)):
            groups: dict[str, list[int]] = {}
            for clip, plan in enumerate(plans):
                if k < len(plan):
                    groups.setdefault(plan[k][0], []).append(clip)
            for op, clips in groups.items():
                args = [plans[clip][k][1] for clip in clips]
                if len(clips) == len(video):
                    video = ops(op)(video, args)
                    continue
                if video is given:  # the caller's tensor is not written to
                    video = video.clone()
                index = to_device(clips, video.device, torch.int64)
                video[index] = ops(op)(video[index], args)
        return video

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(colour_jitter_prob={self.colour_jitter_prob}, "
            f"colour_drop_prob={self.colour_drop_prob}, randaugment={self.randaugment})"
        )


def normalise(video: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``(C, T, H, W)`` or ``(B, C, T, H, W)`` -> contiguous float32 ``(x / 255 - mean) / std`` (0.5/0.5 gives
    [-1, 1]), as one multiply-add: three times faster than four passes on a clip's permuted view."""
    shape = (len(mean), 1, 1, 1)
    scale = to_device([1 / (255 * s) for s in std], video.device).view(shape)
    shift = to_device([-m / s for m, s in zip(mean, std, strict=True)], video.device).view(shape)
    out = torch.empty(video.shape, dtype=torch.float32, device=video.device)  # contiguous, whatever the input's strides
    return out.copy_(video).mul_(scale).add_(shift)


def finish_clips(
    video: Tensor,
    params: Sequence[PhotometricParams | None],
    photometric: Photometric,
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """The clips of a batch from :meth:`ClipTransform.prepare`, uint8 ``(B, C, T, H, W)`` on any device, each
    with its photometric draws (None: none), augmented and normalised: float ``(B, C, T, H, W)``."""
    if any(p is not None for p in params):
        video = photometric.apply(video.transpose(1, 2), params).transpose(1, 2)
    return normalise(video, mean, std)
