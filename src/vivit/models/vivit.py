"""The four ViViT variants (Arnab et al., ICCV 2021, §3.3).

Every variant takes a built tokeniser and returns logits:

    video (B, C, T, H, W) ──tokeniser──> (B, t, s, D) ──+pos──> encoder(s) ──norm──> pool ──head──> (B, K)

- ``SpatioTemporal`` (Model 1): one encoder over all n = t·s tokens (+ CLS).
- ``FactorisedEncoder`` (Model 2): a spatial encoder shared by all frames (CLS per frame), then a
  ``TemporalEncoder`` over the t frame embeddings, or ``FrameAverage`` (``temporal_depth=0``).
- ``FactorisedSelfAttention`` (Model 3): each block runs spatial MSA, temporal MSA, MLP; no CLS.
- ``FactorisedDotProduct`` (Model 4): Model 1's parameters, half of the heads over space and
  half over time; no CLS.

Initialisation: CLS tokens start at zero (as in the official code); linear kernels, the classifier
and positional embeddings ~ TruncNormal(0.02).
The stochastic-depth rate ramps linearly from 0 at the first block to ``drop_path_rate`` at
the last one, restarting in each encoder of Model 2 (as in the official code).

``activation_checkpointing=True`` recomputes each block in the backward pass (``layers.Blocks``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from vivit.models.layers import Block, Blocks, FactorisedDotProductAttention, FactorisedSelfAttentionBlock
from vivit.models.tokenisers import VideoTokeniser
from vivit.rules import check_network

__all__ = [
    "FactorisedDotProduct",
    "FactorisedEncoder",
    "FactorisedSelfAttention",
    "FrameAverage",
    "SpatioTemporal",
    "TemporalEncoder",
    "VideoTransformer",
]

Pool = Literal["cls", "mean"]


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def prepend_cls(x: Tensor, cls_token: Tensor | None) -> Tensor:
    """(B, n, D) -> (B, 1+n, D) when a CLS token is used."""
    return x if cls_token is None else torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)


class VideoTransformer(nn.Module):
    """What all variants share: tokeniser, final norm, pooling, classifier head, checks.

    Subclasses build ``blocks`` (``make_blocks``), the positional embedding(s), and ``forward_features``:
    (B, C, T, H, W) -> final normalised tokens (B, [1+]n, D).
    """

    def __init__(
        self,
        tokeniser: VideoTokeniser,
        num_classes: int,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        pool: Pool = "cls",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        gelu: Literal["none", "tanh"] = "none",
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_network(name, embed_dim, num_heads, pool)
        if tokeniser.embed_dim != embed_dim:
            raise ValueError(f"{name}: tokeniser.embed_dim={tokeniser.embed_dim} differs from embed_dim={embed_dim}")
        if num_classes < 1:
            raise ValueError(f"{name}: num_classes must be positive, got {num_classes}")
        self.tokeniser = tokeniser
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.pool = pool
        self.block_kwargs = dict(
            dim=embed_dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            proj_drop=drop_rate,
            attn_drop=attn_drop_rate,
            gelu=gelu,
        )
        self.activation_checkpointing = activation_checkpointing  # read by make_blocks
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)

    def make_blocks(self, depth: int, drop_path_rate: float, block: Callable[..., nn.Module] = Block) -> Blocks:
        return Blocks(block, depth, drop_path_rate, self.activation_checkpointing, **self.block_kwargs)

    @property
    def activation_checkpointing(self) -> bool:
        """Whether every encoder's blocks are checkpointed; settable after construction."""
        return self._activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, on: bool) -> None:
        self._activation_checkpointing = on
        for module in self.modules():
            if isinstance(module, Blocks):
                module.checkpointing = on

    def init_weights(self) -> None:
        self.apply(init_weights)
        for name, param in self.named_parameters():
            if name.endswith("pos_embed"):
                nn.init.trunc_normal_(param, std=0.02)
            elif name.endswith("cls_token"):
                nn.init.zeros_(param)
        # The official code zero-initialises the classifier kernel, which suits fine-tuning; trained from
        # scratch with Adam that stalls for hundreds of steps (measured on moving digits), so start small.
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        for module in self.children():  # a part with its own scheme (Model 2's temporal encoder) runs it last
            if hasattr(module, "init_weights"):
                module.init_weights()

    def no_weight_decay(self) -> set[str]:
        """Embedding parameters exempt from weight decay (norms and biases are exempt by rank)."""
        return {n for n, _ in self.named_parameters() if n.endswith(("pos_embed", "cls_token"))}

    def pool_tokens(self, x: Tensor) -> Tensor:
        """(B, [1+]n, D) -> (B, D): the CLS token, or the mean of all tokens."""
        return x[:, 0] if self.pool == "cls" else x.mean(dim=1)

    def forward_head(self, x: Tensor) -> Tensor:
        return self.head(self.head_drop(self.pool_tokens(x)))  # (B, K)

    def forward(self, video: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(video))


class SpatioTemporal(VideoTransformer):
    """Model 1: spatio-temporal attention over all tokens.

    Shapes: tokens (B, t, s, D) -> flattened time-major (B, 1+n, D), n = t·s; pos_embed (1, 1+n, D).
    """

    def __init__(
        self, tokeniser: VideoTokeniser, num_classes: int, depth: int = 12, drop_path_rate: float = 0.0, **kwargs
    ) -> None:
        super().__init__(tokeniser, num_classes, depth=depth, drop_path_rate=drop_path_rate, **kwargs)
        n = tokeniser.num_frames * tokeniser.num_spatial
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim)) if self.pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, n + (self.pool == "cls"), self.embed_dim))
        self.blocks = self.make_blocks(depth, drop_path_rate)
        self.init_weights()

    def forward_features(self, video: Tensor) -> Tensor:
        x = rearrange(self.tokeniser(video), "b t s d -> b (t s) d")
        x = self.pos_drop(prepend_cls(x, self.cls_token) + self.pos_embed)  # (B, 1+n, D)
        return self.norm(self.blocks(x))


class GridTransformer(VideoTransformer):
    """Models 3 and 4: blocks that keep the token grid (B, t, s, D) to factorise attention; no CLS.

    Shapes: tokens stay (B, t, s, D) through the blocks; pos_embed (1, n, D); global average pool.
    """

    block: Callable[..., nn.Module]  # one block over (B, t, s, D), set by each model

    def __init__(
        self,
        tokeniser: VideoTokeniser,
        num_classes: int,
        depth: int = 12,
        drop_path_rate: float = 0.0,
        pool: Pool = "mean",
        **kwargs,
    ) -> None:
        super().__init__(tokeniser, num_classes, depth=depth, drop_path_rate=drop_path_rate, pool=pool, **kwargs)
        n = tokeniser.num_frames * tokeniser.num_spatial
        self.pos_embed = nn.Parameter(torch.zeros(1, n, self.embed_dim))
        self.blocks = self.make_blocks(depth, drop_path_rate, self.block)
        self.init_weights()

    def forward_features(self, video: Tensor) -> Tensor:
        x = self.tokeniser(video)  # (B, t, s, D)
        x = self.pos_drop(x + self.pos_embed.view(1, *x.shape[1:]))
        return self.norm(rearrange(self.blocks(x), "b t s d -> b (t s) d"))


class FactorisedSelfAttention(GridTransformer):
    """Model 3: factorised self-attention blocks (spatial MSA → temporal MSA → MLP)."""

    block = FactorisedSelfAttentionBlock


class FactorisedDotProduct(GridTransformer):
    """Model 4: Model 1's blocks and parameters, with factorised dot-product attention."""

    block = partial(Block, attn_layer=FactorisedDotProductAttention)


class TemporalEncoder(nn.Module):
    """Model 2's temporal encoder: frame embeddings (B, t, D) -> normalised tokens (B, [1+]t, D), with its own
    CLS token (``use_cls``), positional embedding (1, [1+]t, D) ~ TruncNormal(``pos_std``), blocks and norm."""

    def __init__(self, dim: int, num_frames: int, use_cls: bool, pos_std: float, blocks: Blocks) -> None:
        super().__init__()
        self.pos_std = pos_std
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if use_cls else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_frames + use_cls, dim))
        self.blocks = blocks
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=self.pos_std)

    def forward(self, frames: Tensor) -> Tensor:
        return self.norm(self.blocks(prepend_cls(frames, self.cls_token) + self.pos_embed))


class FrameAverage(nn.Module):
    """The paper's average-pool baseline in place of the temporal encoder: frame embeddings (B, t, D) -> their
    mean as the one token the head reads (B, 1, D), whichever the pooling. No parameters."""

    cls_token = None  # as a TemporalEncoder without CLS: nothing attends, the frames are averaged

    def forward(self, frames: Tensor) -> Tensor:
        return frames.mean(dim=1, keepdim=True)


class FactorisedEncoder(VideoTransformer):
    """Model 2: factorised encoder ("late fusion").

    The spatial encoder (``blocks``, ``norm``, ``cls_token``, ``pos_embed`` of shape (1, 1+s, D),
    shared by all frames) runs on each frame; its CLS output (or mean) is the frame embedding h_i.
    ``temporal`` (a ``TemporalEncoder`` of ``temporal_depth`` blocks) runs over H = [h_1 … h_t]; with
    ``temporal_depth=0`` it is ``FrameAverage``, the paper's average-pool baseline.

    ``temporal_pos_std``: the temporal positional embedding starts ~ TruncNormal(temporal_pos_std), 0.02 as
    every other embedding (the official code); why 1.0 learns frame order sooner from scratch:
    experiments/table3_temporal_layers/README.md.

    Shapes: tokens (B, t, s, D) -> (B·t, 1+s, D) -> frames (B, t, D) -> (B, 1+t, D).
    """

    def __init__(
        self,
        tokeniser: VideoTokeniser,
        num_classes: int,
        depth: int = 12,
        temporal_depth: int = 4,
        drop_path_rate: float = 0.0,
        temporal_pos_std: float = 0.02,
        **kwargs,
    ) -> None:
        super().__init__(tokeniser, num_classes, depth=depth, drop_path_rate=drop_path_rate, **kwargs)
        if temporal_depth < 0:
            raise ValueError(f"FactorisedEncoder: temporal_depth must be >= 0, got {temporal_depth}")
        if temporal_pos_std < 0:
            raise ValueError(f"FactorisedEncoder: temporal_pos_std must be >= 0, got {temporal_pos_std}")
        use_cls = self.pool == "cls"
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim)) if use_cls else None
        self.pos_embed = nn.Parameter(torch.zeros(1, tokeniser.num_spatial + use_cls, self.embed_dim))
        self.blocks = self.make_blocks(depth, drop_path_rate)
        temporal_blocks = self.make_blocks(temporal_depth, drop_path_rate)
        self.temporal = (  # no temporal blocks: the paper's average-pool baseline
            TemporalEncoder(self.embed_dim, tokeniser.num_frames, use_cls, temporal_pos_std, temporal_blocks)
            if temporal_depth > 0
            else FrameAverage()
        )
        self.init_weights()

    def forward_spatial(self, video: Tensor) -> Tensor:
        """The spatial encoder on every frame: (B, C, T, H, W) -> frame embeddings h_i (B, t, D)."""
        x = self.tokeniser(video)  # (B, t, s, D)
        B = x.shape[0]
        x = rearrange(x, "b t s d -> (b t) s d")
        x = self.pos_drop(prepend_cls(x, self.cls_token) + self.pos_embed)  # (B·t, 1+s, D)
        x = self.norm(self.blocks(x))
        return rearrange(self.pool_tokens(x), "(b t) d -> b t d", b=B)

    def forward_features(self, video: Tensor) -> Tensor:
        return self.temporal(self.forward_spatial(video))  # (B, [1+]t, D), or (B, 1, D) averaged
