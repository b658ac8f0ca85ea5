"""Transformer layers of the ViViT family.

Attribute names follow timm's ViT (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``) so that an image ViT's state dict maps onto every variant nearly one-to-one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, Mlp
from timm.models import checkpoint_seq
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from vivit.rules import check_heads, check_split_heads

__all__ = [
    "ATTENTION_BACKENDS",
    "Attention",
    "Block",
    "Blocks",
    "FactorisedDotProductAttention",
    "FactorisedSelfAttentionBlock",
    "attention_priority",
    "record_attention",
]

ATTENTION_BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def attention_priority(backends: Sequence[str] | None) -> Callable[[], AbstractContextManager]:
    """A context factory under which SDPA tries ``backends`` (names of ATTENTION_BACKENDS) in this
    order; None or empty leaves the choice to torch."""
    unknown = sorted(set(backends or ()) - set(ATTENTION_BACKENDS))
    if unknown:
        raise ValueError(f"attention_backends: unknown {unknown}; choose from {list(ATTENTION_BACKENDS)}")
    if not backends:
        return nullcontext
    return partial(sdpa_kernel, [ATTENTION_BACKENDS[b] for b in backends], set_priority=True)


# The list that record_attention() fills while it is active; None: attention runs through SDPA.
_attention_records: list[Tensor] | None = None


@contextmanager
def record_attention() -> Iterator[list[Tensor]]:
    """While active, every attention layer computes softmax(q·kᵀ/√dh) explicitly instead of through
    SDPA and appends the probabilities, (B', nh', N, N), detached, to the yielded list in call order.

    For attention maps (vivit.attention_maps); the outputs are those of SDPA up to rounding.
    """
    global _attention_records
    previous, _attention_records = _attention_records, []
    try:
        yield _attention_records
    finally:
        _attention_records = previous


def drop_path_or_identity(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()


class Attention(nn.Module):
    """Multi-head self-attention with a fused QKV projection, through SDPA.

    Shapes: (B, n, D) -> (B, n, D).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., D) -> q, k, v each (..., nh, dh) moved to (B, nh, *tokens, dh)."""
        qkv = rearrange(self.qkv(x), "... (three nh dh) -> three ... nh dh", three=3, nh=self.num_heads)
        return tuple(z.movedim(-2, 1) for z in qkv.unbind(0))  # type: ignore[return-value]

    def sdpa(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The single place where attention is computed: (B, nh, N, dh) each -> (B, nh, N, dh)."""
        if _attention_records is not None:  # under record_attention(): the explicit softmax
            attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)  # (B, nh, N, N)
            _attention_records.append(attn.detach())
            return F.dropout(attn, self.attn_drop, self.training) @ v
        # Dropout only while training: SDPA has no notion of eval mode (timm PR #1978).
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.split_heads(x)  # (B, nh, n, dh)
        y = rearrange(self.sdpa(q, k, v), "b nh n dh -> b n (nh dh)")
        return self.proj_drop(self.proj(y))


class FactorisedDotProductAttention(Attention):
    """Model 4 (ViViT Eq. 7): half of the heads attend over time, half over space.

    The parameters are exactly those of ``Attention``. As in the official code, the first half
    of the heads is temporal (keys at the same spatial index), the second half spatial (keys in
    the same frame); the heads are then concatenated and projected by one W_O.

    Shapes: (B, t, s, D) -> (B, t, s, D).
    """

    def __init__(self, dim: int, num_heads: int, **kwargs) -> None:
        check_split_heads(num_heads)
        super().__init__(dim, num_heads, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        B, t, s, _ = x.shape
        q, k, v = self.split_heads(x)  # (B, nh, t, s, dh)
        half = self.num_heads // 2
        to_time = "b nh t s dh -> (b s) nh t dh"
        y_t = self.sdpa(*(rearrange(z[:, :half], to_time) for z in (q, k, v)))  # (B·s, nh/2, t, dh)
        to_space = "b nh t s dh -> (b t) nh s dh"
        y_s = self.sdpa(*(rearrange(z[:, half:], to_space) for z in (q, k, v)))  # (B·t, nh/2, s, dh)
        y_t = rearrange(y_t, "(b s) nh t dh -> b t s nh dh", b=B)
        y_s = rearrange(y_s, "(b t) nh s dh -> b t s nh dh", b=B)
        y = rearrange([y_t, y_s], "half b t s nh dh -> b t s (half nh dh)")  # Concat(Y_t, Y_s)
        return self.proj_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LN transformer block (ViViT Eqs. 2–3). The attention layer decides the token layout."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attn_layer: type[Attention] = Attention,
        gelu: str = "none",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn_layer(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        # gelu="tanh": the tanh approximation that transformers' ViViT checkpoints use ("gelu_fast")
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=partial(nn.GELU, approximate=gelu), drop=proj_drop)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, z: Tensor) -> Tensor:
        y = z + self.drop_path(self.attn(self.norm1(z)))  # Eq. 2: y = MSA(LN(z)) + z
        return y + self.drop_path(self.mlp(self.norm2(y)))  # Eq. 3: z' = MLP(LN(y)) + y


class FactorisedSelfAttentionBlock(Block):
    """Model 3 (ViViT Eqs. 4–6): spatial MSA, then temporal MSA, then the MLP.

    Each MSA has its own LayerNorm and residual. ``norm1``/``attn`` are the spatial pair (they take
    an image ViT's weights), ``temporal_norm``/``temporal_attn`` the new temporal pair.

    Shapes: (B, t, s, D) -> (B, t, s, D); spatial attention runs on (B·t, s, D), temporal on (B·s, t, D).
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0, **kwargs
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop, attn_drop=attn_drop, **kwargs)
        self.temporal_norm = nn.LayerNorm(dim, eps=1e-6)
        self.temporal_attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)

    def forward(self, z: Tensor) -> Tensor:
        B = z.shape[0]
        z_s = rearrange(z, "b t s d -> (b t) s d")
        y_s = z_s + self.drop_path(self.attn(self.norm1(z_s)))  # Eq. 4
        z_t = rearrange(y_s, "(b t) s d -> (b s) t d", b=B)
        y_t = z_t + self.drop_path(self.temporal_attn(self.temporal_norm(z_t)))  # Eq. 5
        y = rearrange(y_t, "(b s) t d -> b t s d", b=B)
        return y + self.drop_path(self.mlp(self.norm2(y)))  # Eq. 6


class Blocks(nn.Sequential):
    """One encoder: ``depth`` blocks ``block(**block_kwargs, drop_path=rate)`` in sequence, the stochastic-depth
    rate ramping linearly from 0 at the first block to ``drop_path_rate`` at the last.

    With ``checkpointing`` on (and gradients enabled), each block's activations are recomputed in the backward
    pass instead of stored (timm's ``checkpoint_seq``): the memory of long clips for about a third more compute.
    """

    def __init__(
        self, block: Callable[..., nn.Module], depth: int, drop_path_rate: float, checkpointing: bool, **block_kwargs
    ) -> None:
        rates = [drop_path_rate * i / (depth - 1) for i in range(depth)] if depth > 1 else [drop_path_rate] * depth
        super().__init__(*(block(**block_kwargs, drop_path=rate) for rate in rates))
        self.checkpointing = checkpointing

    def forward(self, x: Tensor) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint_seq(self, x, use_reentrant=False)
        return super().forward(x)
