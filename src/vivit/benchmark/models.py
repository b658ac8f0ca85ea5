"""What the benchmark measures: our variants at the sizes of the paper's Table 2, and Model 1 as its peers build it
(timm's ViT blocks, transformers' ``VivitForVideoClassification``), all at one :class:`Setting`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from vivit.models import (
    FactorisedDotProduct,
    FactorisedEncoder,
    FactorisedSelfAttention,
    SpatioTemporal,
    TubeletTokeniser,
    UniformFrameTokeniser,
)

SIZES = {  # ViT sizes (embed_dim, depth, num_heads) of the paper's Table 2
    "ti": (192, 12, 3),
    "s": (384, 12, 6),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
}
VARIANTS = {
    "spatiotemporal": partial(SpatioTemporal, pool="cls"),
    "factorised_encoder": partial(FactorisedEncoder, pool="cls", temporal_depth=4),
    "factorised_self_attention": FactorisedSelfAttention,
    "factorised_dot_product": FactorisedDotProduct,
}
TOKENISERS = {"tubelet": TubeletTokeniser, "uniform_frame": UniformFrameTokeniser}
NUM_CLASSES = 400


@dataclass
class Setting:
    """One benchmark configuration: the clip, the model size and the batch sizes."""

    size: str
    frames: int
    resolution: int
    train_batch: int
    infer_batch: int
    patch: tuple[int, int, int] = (2, 16, 16)
    steps: int = 10
    warmup: int = 3


def build_vivit(variant: str, tokeniser: str, s: Setting, **kwargs) -> nn.Module:
    dim, depth, heads = SIZES[s.size]
    tok = TOKENISERS[tokeniser](dim, (s.frames, s.resolution, s.resolution), s.patch)
    return VARIANTS[variant](tok, NUM_CLASSES, embed_dim=dim, depth=depth, num_heads=heads, **kwargs)


class TimmModel1(nn.Module):
    """Model 1 assembled from timm's ViT blocks: the usual way to build ViViT on timm."""

    def __init__(self, s: Setting) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        dim, depth, heads = SIZES[s.size]
        n = (s.frames // s.patch[0]) * (s.resolution // s.patch[1]) * (s.resolution // s.patch[2])
        self.patch_embed = nn.Conv3d(3, dim, s.patch, s.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, qkv_bias=True) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, video: Tensor) -> Tensor:  # (B, C, T, H, W) -> (B, K)
        x = self.patch_embed(video).flatten(2).transpose(1, 2)  # (B, n, D)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class TransformersModel1(nn.Module):
    """transformers' VivitForVideoClassification at the same size; takes its own (B, T, C, H, W)."""

    channels_first = False

    def __init__(self, s: Setting, attn_implementation: str) -> None:
        super().__init__()
        from transformers import VivitConfig, VivitForVideoClassification

        dim, depth, heads = SIZES[s.size]
        config = VivitConfig(
            image_size=s.resolution,
            num_frames=s.frames,
            tubelet_size=list(s.patch),
            hidden_size=dim,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            intermediate_size=4 * dim,
            num_labels=NUM_CLASSES,
            attn_implementation=attn_implementation,
        )
        self.model = VivitForVideoClassification(config)

    def forward(self, video: Tensor) -> Tensor:
        return self.model(pixel_values=video).logits
