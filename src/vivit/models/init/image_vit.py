"""Initialising a ViViT variant from a pretrained image ViT (ViViT §3.4), strictly and with a report.

The surgery is a pure function over state dicts (timm key names), ``adapt_image_vit``; ``ImageViTInit``
reads a checkpoint, applies it to a network and checks that nothing but the expected keys stayed fresh.

What each target key gets:

- ``tokeniser.proj``: the image patch kernel. A tubelet kernel (D, C, pt, ph, pw) is inflated:
  ``central_frame`` puts it at slice pt // 2 and zeros elsewhere (Eq. 9), ``average`` puts kernel / pt
  on every slice (Eq. 8), ``random`` keeps the network's own initialisation. The bias is copied.
- ``pos_embed``: the image grid, resized on the 2-D grid when the patch grid differs (as Scenic does:
  bilinear with the corners aligned, ``resize_grid``; the released-ViViT loaders never resize), then tiled over
  the t token frames, time-major, with the CLS entry kept once in front (Models 1, 3, 4). Model 2's
  spatial encoder takes the grid untiled: one positional embedding shared by all frames.
- ``cls_token``: the image CLS token, where the variant has one (Model 1 and Model 2's spatial encoder).
- ``blocks.*``, ``norm``: copied; Model 3's ``temporal_attn`` is ``zero`` (the block starts as the image
  block, the paper) or a ``copy`` of the spatial attention (the official code's default).
- Always fresh: the classifier ``head``; Model 2's temporal encoder (``temporal.*``); Model 3's
  ``temporal_norm``.

Sources (``read_state_dict``): timm state dicts, transformers ViT checkpoints (converted to timm names),
Google's ViT .npz (through timm's loader), ``timm:<name>`` and ``hf:<repo>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor

from vivit.models.init.common import ZERO_CENTRED, InitError, InitReport, load, read_tensors
from vivit.models.init.hf_vivit import is_transformers_vit, transformers_to_timm
from vivit.models.init.scenic_vivit import is_flax_checkpoint
from vivit.models.tokenisers import TubeletTokeniser
from vivit.models.vivit import FactorisedEncoder, FactorisedSelfAttention, VideoTransformer

__all__ = ["ImageViTInit", "adapt_image_vit", "read_state_dict", "source_normalisation"]

TubeletInit = Literal["central_frame", "average", "random"]
TemporalAttnInit = Literal["zero", "copy"]
IGNORED_SOURCE_PREFIXES = ("head.", "head_drop.", "pre_logits.", "fc_norm.")  # the image classifier


def expected_fresh(net: VideoTransformer, tubelet: TubeletInit = "central_frame") -> set[str]:
    """The target keys that no image ViT provides, for this variant and tubelet option."""
    keys = set(net.state_dict())
    fresh = {k for k in keys if k.startswith(("head.", "temporal.")) or ".temporal_norm." in k}
    if tubelet == "random" and isinstance(net.tokeniser, TubeletTokeniser):
        fresh |= {"tokeniser.proj.weight", "tokeniser.proj.bias"}
    return fresh


def adapt_image_vit(
    image: Mapping[str, Tensor],
    net: VideoTransformer,
    *,
    tubelet: TubeletInit = "central_frame",
    temporal_attn: TemporalAttnInit = "zero",
    source: str = "image ViT",
) -> tuple[dict[str, Tensor], InitReport]:
    """Map a timm-format image ViT state dict onto ``net``'s keys; returns (state dict, report).

    Raises InitError naming the keys when the source lacks a key the network needs, has keys nothing
    consumes, or holds a tensor of the wrong shape.
    """
    target = net.state_dict()
    report = InitReport(source=source)
    state: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> Tensor:
        if key not in image:
            raise InitError(f"{source}: missing key {key!r}, needed by the {type(net).__name__}")
        used.add(key)
        return image[key]

    def put(key: str, value: Tensor, how: str | None = None) -> None:
        if value.shape != target[key].shape:
            raise InitError(
                f"{source}: {key!r} has shape {tuple(value.shape)} after adaptation but the network needs "
                f"{tuple(target[key].shape)}"
            )
        state[key] = value.to(target[key].dtype)
        if how is None:
            report.copied.append(key)
        else:
            report.transformed[key] = how

    # Tokeniser: the patch embedding, inflated to a tubelet kernel.
    kernel, bias = take("patch_embed.proj.weight"), take("patch_embed.proj.bias")  # (D, C, ph, pw)
    if isinstance(net.tokeniser, TubeletTokeniser):
        pt = net.tokeniser.patch_size[0]
        if tubelet == "central_frame":
            inflated = torch.zeros(*kernel.shape[:2], pt, *kernel.shape[2:], dtype=kernel.dtype)
            inflated[:, :, pt // 2] = kernel
            put(
                "tokeniser.proj.weight",
                inflated,
                f"central_frame: image kernel at slice {pt // 2} of {pt}, zeros elsewhere",
            )
            put("tokeniser.proj.bias", bias)
        elif tubelet == "average":
            inflated = kernel.unsqueeze(2).repeat(1, 1, pt, 1, 1) / pt
            put("tokeniser.proj.weight", inflated, f"average: image kernel / {pt} on each of {pt} slices")
            put("tokeniser.proj.bias", bias)
        elif tubelet != "random":
            raise InitError(f"init.tubelet must be central_frame, average or random, got {tubelet!r}")
    else:
        put("tokeniser.proj.weight", kernel)
        put("tokeniser.proj.bias", bias)

    # Positional embedding and CLS token.
    source_cls = "cls_token" in image
    pos = take("pos_embed")  # (1, [1+]h0·w0, D)
    cls_pos, grid = (pos[:, :1], pos[:, 1:]) if source_cls else (None, pos)
    t, h, w = net.tokeniser.grid_size
    grid, resized = resize_grid(grid, (h, w))
    target_cls = "cls_token" in target
    if target_cls:
        if not source_cls:
            raise InitError(
                f"{source}: has no cls_token, but the {type(net).__name__} uses pool='cls'; set model.net.pool=mean"
            )
        put("cls_token", take("cls_token"))
    elif source_cls:
        report.unused.append("cls_token")
        used.add("cls_token")
    shared = isinstance(net, FactorisedEncoder)
    body = grid if shared else grid.repeat(1, t, 1)  # tile: frame i's slice is the image grid
    pos_embed = torch.cat([cls_pos, body], dim=1) if target_cls else body
    how = ("shared by all frames" if shared else f"tiled over {t} frames, time-major") + resized
    if target_cls:
        how += ", CLS entry kept once"
    elif source_cls:
        how += ", CLS entry dropped"
    put("pos_embed", pos_embed, how)

    # Encoder blocks and the final norm: the image keys, one to one.
    for key in target:
        if key.startswith("blocks.") and ".temporal_" not in key:
            put(key, take(key))
    if isinstance(net, FactorisedSelfAttention):
        for key in (k for k in target if ".temporal_attn." in k):
            spatial = key.replace(".temporal_attn.", ".attn.")
            if temporal_attn == "zero":
                put(key, torch.zeros_like(target[key]), "zero: the temporal MSA starts as an identity residual")
            elif temporal_attn == "copy":
                put(key, take(spatial), f"copy of {spatial}")
            else:
                raise InitError(f"init.temporal_attn must be zero or copy, got {temporal_attn!r}")
    if "norm.weight" not in image and "fc_norm.weight" in image:  # a timm GAP ViT normalises after pooling
        for p in ("weight", "bias"):
            put(f"norm.{p}", take(f"fc_norm.{p}"), "from fc_norm (the image ViT normalised after pooling)")
    else:
        put("norm.weight", take("norm.weight"))
        put("norm.bias", take("norm.bias"))

    report.unused += sorted(k for k in image if k not in used and k.startswith(IGNORED_SOURCE_PREFIXES))
    unexpected = sorted(k for k in image if k not in used and not k.startswith(IGNORED_SOURCE_PREFIXES))
    if unexpected:
        raise InitError(
            f"{source}: keys with no place in the {type(net).__name__} (a deeper or different model?): "
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    report.fresh = sorted(k for k in target if k not in state)
    missing = set(report.fresh) - expected_fresh(net, tubelet)
    if missing:
        raise InitError(f"{source}: no value for {sorted(missing)[:10]} (a shallower or different model?)")
    return state, report


def resize_grid(grid: Tensor, size: tuple[int, int]) -> tuple[Tensor, str]:
    """(1, h0·w0, D) -> (1, h·w, D): the official code's 'resize' (Scenic's ``scipy.ndimage.zoom(order=1)``),
    bilinear on the 2-D grid with the corner entries kept, for every image ViT source: the same weights
    must give the same network whichever file format holds them. timm's ``resample_abs_pos_embed`` does it when
    told so (its default, bicubic with the corners not aligned, differs from Scenic's by up to 0.4 on a 14×14 →
    16×16 grid of N(0, 0.5²) entries); it computes in float32, within 2e-6 of scipy's float64 there."""
    n = grid.shape[1]
    h0 = int(round(n**0.5))
    if h0 * h0 != n:
        raise InitError(f"pos_embed has {n} grid entries, not a square grid")
    if (h0, h0) == tuple(size):
        return grid, ""
    resized = resample_abs_pos_embed(
        grid, list(size), (h0, h0), num_prefix_tokens=0, interpolation="bilinear", antialias=False, align_corners=True
    )
    return resized, f", grid resized {h0}×{h0} → {size[0]}×{size[1]} (bilinear, corners aligned, as Scenic)"


def read_state_dict(source: str | Path) -> dict[str, Tensor]:
    """A timm-format image ViT state dict from:

    - a local .pth/.pt/.bin/.safetensors file with timm or transformers key names,
    - a transformers model directory (model.safetensors or pytorch_model.bin inside),
    - Google's original ViT .npz (read through timm's own npz loader),
    - ``timm:<name>`` or ``hf:<repo id>``, downloaded (network access needed).
    """
    text = str(source)
    if text.startswith("timm:"):
        import timm

        return timm.create_model(text[len("timm:") :], pretrained=True).state_dict()
    if text.startswith("hf:"):
        from huggingface_hub import snapshot_download

        text = snapshot_download(text[len("hf:") :], allow_patterns=["*.json", "*.safetensors", "*.bin"])
    path = Path(text)
    if is_flax_checkpoint(path):
        raise InitError(f"{path} is a Flax checkpoint: a Scenic ViViT loads with init=scenic_vivit")
    if path.suffix == ".npz" and path.is_file():
        return read_google_npz(path)
    state, path = read_tensors(path)
    return transformers_to_timm(state, str(path)) if is_transformers_vit(state) else state


def read_google_npz(path: Path) -> dict[str, Tensor]:
    """Google's ViT .npz (e.g. imagenet21k/ViT-B_16.npz, as the paper used) as a timm state dict.

    The sizes are read off the arrays; timm's own loader then does the conversion.
    """
    import numpy as np
    from timm.models.vision_transformer import VisionTransformer

    with np.load(path) as npz:
        shapes = {k: npz[k].shape for k in npz.files}
    if "embedding/kernel" not in shapes:
        raise InitError(f"{path}: not a ViT .npz (no 'embedding/kernel')")
    ph, pw, chans, dim = shapes["embedding/kernel"]
    depth = len({k.split("/")[1] for k in shapes if k.startswith("Transformer/encoderblock_")})
    heads = shapes["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"][1]
    mlp = shapes["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"][1]
    tokens = shapes["Transformer/posembed_input/pos_embedding"][1] - ("cls" in shapes)
    grid = int(round(tokens**0.5))
    sizes = dict(img_size=grid * ph, patch_size=ph, in_chans=chans, embed_dim=dim, depth=depth, num_heads=heads)
    classes = shapes.get("head/kernel", (dim, 0))[1]
    vit = VisionTransformer(**sizes, mlp_ratio=mlp / dim, class_token="cls" in shapes, num_classes=classes)
    vit.load_pretrained(str(path))
    return vit.state_dict()


def source_normalisation(source: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) that a checkpoint's weights expect, where the source says so; else None."""
    text = str(source)
    if text.startswith("timm:"):
        import timm

        cfg = timm.models.get_pretrained_cfg(text[len("timm:") :])  # offline: the registry, not the hub
        return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else None
    path = Path(text)
    if path.suffix == ".npz":
        return ZERO_CENTRED
    processor = (path if path.is_dir() else path.parent) / "preprocessor_config.json"
    if processor.is_file():  # transformers' image processor
        config = json.loads(processor.read_text())
        if "image_mean" in config and "image_std" in config:
            return tuple(config["image_mean"]), tuple(config["image_std"])
    return None


class ImageViTInit:
    """``init(net)``: load an image ViT checkpoint into ``net`` strictly; returns the InitReport."""

    def __init__(
        self,
        source: str,
        tubelet: TubeletInit = "central_frame",
        temporal_attn: TemporalAttnInit = "zero",
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        """``mean``/``std``: the input normalisation the weights expect; None reads it from the source
        where the source states it (timm's pretrained config, Google .npz, transformers' processor).
        ``normalisation``: that (mean, std), or None; known before loading, so the data is built with it."""
        self.source, self.tubelet, self.temporal_attn = source, tubelet, temporal_attn
        if (mean is None) != (std is None):
            raise InitError("give both init.mean and init.std, or neither")
        self.normalisation = (tuple(mean), tuple(std)) if mean is not None else source_normalisation(source)

    def __call__(self, net: VideoTransformer) -> InitReport:
        image = read_state_dict(self.source)
        state, report = adapt_image_vit(
            image, net, tubelet=self.tubelet, temporal_attn=self.temporal_attn, source=str(self.source)
        )
        load(net, state, report)
        report.mean, report.std = self.normalisation or (None, None)
        return report
