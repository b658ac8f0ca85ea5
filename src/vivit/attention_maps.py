"""Attention maps for every ViViT variant, by attention rollout (Abnar & Zuidema, 2020).

Rollout: in each attention layer, average the heads, add the identity (the residual connection) and
renormalise the rows; multiply these row-stochastic matrices through the layers, first layer on the
right. The pooled output's row of the product (the CLS token's, or the mean of all rows with mean
pooling) says how much each input token contributes. Per variant:

- Model 1: one rollout over the [1+]n tokens.
- Model 2: a spatial rollout per frame (query: the frame's CLS token or mean), then a temporal rollout
  over the frames (query: CLS or mean); token (i, a) gets temporal[i] · spatial[i, a]. With
  ``temporal_depth=0`` (``FrameAverage``) the frames are averaged, so temporal[i] = 1/t.
- Model 3: each block runs spatial then temporal MSA, each with its own residual: the block mixes the
  grid by T̂·Ŝ, the product of the two.
- Model 4: each block's heads are half temporal, half spatial, concatenated before one projection:
  averaging all heads gives ½(T + S) on the grid, then the residual.

``attention_rollout(net, video)`` returns a (B, t, h, w) map that sums to 1 per clip; ``upsample``
brings it to (B, T, H, W); ``overlay`` and ``save_frames`` render it on the frames as a PNG grid or a GIF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vivit.models import (
    FactorisedDotProduct,
    FactorisedEncoder,
    FactorisedSelfAttention,
    SpatioTemporal,
    VideoTokeniser,
    VideoTransformer,
    record_attention,
)
from vivit.models.layers import Attention, FactorisedDotProductAttention

__all__ = [
    "attention_rollout",
    "overlay",
    "pooled_relevance",
    "rollout",
    "rollout_relevance",
    "save_frames",
    "spatial_on_grid",
    "temporal_on_grid",
    "upsample",
    "with_residual",
]


def with_residual(attn: Tensor) -> Tensor:
    """Head-averaged attention (..., N, N) -> (A + I) with rows renormalised: the residual's share."""
    attn = attn.float() + torch.eye(attn.shape[-1], device=attn.device)
    return attn / attn.sum(dim=-1, keepdim=True)


def rollout(mixes: Sequence[Tensor]) -> Tensor:
    """Row-stochastic mixing matrices (..., N, N), first layer first -> M_L ⋯ M_1 (rows sum to 1)."""
    out = mixes[0]
    for mix in mixes[1:]:
        out = mix @ out
    return out


def pooled_relevance(rolled: Tensor, cls: bool) -> Tensor:
    """Rollout (..., [1+]N, [1+]N) -> (..., N): what the pooled output draws from each input token.

    The query is the CLS row or, with mean pooling, the mean of the rows; the CLS column is dropped
    and the result renormalised to sum to 1.
    """
    if cls:
        relevance = rolled[..., 0, 1:]
        return relevance / relevance.sum(dim=-1, keepdim=True)
    return rolled.mean(dim=-2)


def spatial_on_grid(mix: Tensor, t: int) -> Tensor:
    """Per-frame mixing (B·t, s, s) -> (B, n, n) on the time-major grid: block diagonal over frames."""
    mix = rearrange(mix, "(b t) s z -> b t s z", t=t)
    full = torch.einsum("btsz,tu->btsuz", mix, torch.eye(t, device=mix.device))  # zero across frames
    return rearrange(full, "b t s u z -> b (t s) (u z)")


def temporal_on_grid(mix: Tensor, s: int) -> Tensor:
    """Per-location mixing (B·s, t, t) -> (B, n, n) on the time-major grid: zero across locations."""
    mix = rearrange(mix, "(b s) t u -> b s t u", s=s)
    full = torch.einsum("bstu,sz->btsuz", mix, torch.eye(s, device=mix.device))
    return rearrange(full, "b t s u z -> b (t s) (u z)")


def rollout_relevance(net: VideoTransformer, attentions: Sequence[Tensor]) -> Tensor:
    """The attention probabilities that ``record_attention`` caught in one forward pass of ``net``,
    in call order, -> token relevance (B, n), time-major, summing to 1 per clip."""
    t, s = net.tokeniser.num_frames, net.tokeniser.num_spatial
    cls = net.pool == "cls"
    heads = [a.float().mean(dim=1) for a in attentions]  # (B', N, N) each
    # One matrix per attention call; Model 4's attention makes two, its temporal and its spatial heads.
    expected = sum(1 + isinstance(m, FactorisedDotProductAttention) for m in net.modules() if isinstance(m, Attention))
    if len(heads) != expected:
        raise ValueError(f"{type(net).__name__}: expected {expected} attention matrices, got {len(heads)}")

    if isinstance(net, SpatioTemporal):
        return pooled_relevance(rollout([with_residual(a) for a in heads]), cls)
    if isinstance(net, FactorisedEncoder):
        depth = len(net.blocks)
        spatial = pooled_relevance(rollout([with_residual(a) for a in heads[:depth]]), cls)  # (B·t, s)
        spatial = rearrange(spatial, "(b t) s -> b t s", t=t)
        # The temporal rollout starts from the frames themselves: with no temporal layers (the average-pool
        # baseline, no CLS) each frame gets 1/t.
        temporal_cls = net.temporal.cls_token is not None
        frames = torch.eye(t + temporal_cls, device=spatial.device).expand(len(spatial), -1, -1)
        mixes = [frames, *(with_residual(a) for a in heads[depth:])]
        temporal = pooled_relevance(rollout(mixes), temporal_cls)  # (B, t)
        return rearrange(temporal[..., None] * spatial, "b t s -> b (t s)")
    if isinstance(net, FactorisedSelfAttention):  # per block: spatial (B·t, s, s), then temporal (B·s, t, t)
        blocks = [
            temporal_on_grid(with_residual(temporal), s) @ spatial_on_grid(with_residual(spatial), t)
            for spatial, temporal in zip(heads[::2], heads[1::2])
        ]
        return pooled_relevance(rollout(blocks), cls=False)
    if isinstance(net, FactorisedDotProduct):  # per block: temporal heads (B·s, t, t), spatial heads (B·t, s, s)
        blocks = [
            with_residual(0.5 * temporal_on_grid(temporal, s) + 0.5 * spatial_on_grid(spatial, t))
            for temporal, spatial in zip(heads[::2], heads[1::2])
        ]
        return pooled_relevance(rollout(blocks), cls=False)
    raise TypeError(f"no attention rollout for {type(net).__name__}")


def attention_rollout(net: VideoTransformer, video: Tensor) -> Tensor:
    """Attention rollout of ``net`` on ``video`` (B, C, T, H, W) -> relevance (B, t, h, w), sums to 1 per clip.

    Runs one forward pass in eval mode under ``record_attention`` (the logits are unchanged).
    """
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), record_attention() as attentions:
            net(video)
    finally:
        net.train(was_training)
    t, h, w = net.tokeniser.grid_size
    return rearrange(rollout_relevance(net, attentions), "b (t h w) -> b t h w", t=t, h=h, w=w)


def upsample(relevance: Tensor, tokeniser: VideoTokeniser) -> Tensor:
    """(B, t, h, w) -> (B, T, H, W) for overlays: each token frame covers its pt input frames,
    bilinear in space."""
    pt = tokeniser.patch_size[0]
    _, H, W = tokeniser.video_size
    frames = relevance.repeat_interleave(pt, dim=1)  # (B, T, h, w)
    return F.interpolate(frames, size=(H, W), mode="bilinear", align_corners=False)


def overlay(
    video: Tensor,
    heat: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    alpha: float = 0.5,
    cmap: str = "inferno",
) -> np.ndarray:
    """One clip (C, T, H, W), normalised as the model saw it, and its map (T, H, W) -> RGB frames
    (T, H, W, 3) uint8 with the map blended over the frames, its range stretched to the colour map's."""
    import matplotlib

    mean_, std_ = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1, 1) for v in (mean, std))
    frames = (video.detach().cpu().float() * std_ + mean_).clamp(0, 1)  # (C, T, H, W) in [0, 1]
    frames = rearrange(frames.expand(3, *frames.shape[1:]) if frames.shape[0] == 1 else frames, "c t h w -> t h w c")
    heat = heat.detach().cpu().float()
    heat = ((heat - heat.min()) / (heat.max() - heat.min()).clamp_min(1e-12)).numpy()
    colours = torch.from_numpy(matplotlib.colormaps[cmap](heat)[..., :3]).float()  # (T, H, W, 3)
    rgb = (1 - alpha) * frames + alpha * colours
    return (rgb * 255).round().to(torch.uint8).numpy()


def save_frames(frames: np.ndarray, path: str | Path, scale: int = 4, columns: int | None = None, fps: int = 4) -> Path:
    """RGB frames (T, H, W, 3) uint8 -> a GIF when ``path`` ends in .gif, else a PNG grid of the
    frames (``columns`` per row, default all in one row); each frame enlarged ``scale`` times."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    T, H, W, _ = frames.shape
    size = (W * scale, H * scale)
    images = [Image.fromarray(frame).resize(size, Image.Resampling.NEAREST) for frame in frames]
    if path.suffix.lower() == ".gif":
        images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
        return path
    columns = columns or T
    sheet = Image.new("RGB", (columns * size[0], math.ceil(T / columns) * size[1]))
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * size[0], (i // columns) * size[1]))
    sheet.save(path)
    return path
