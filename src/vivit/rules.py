"""The construction rules of the ViViT networks, in plain Python (no torch).

The constructors in ``vivit.models`` apply them, and ``vivit.config.check_config`` applies them to a
composed config before torch is imported, so an impossible combination fails at once with the same
message. Networks are named by their class names; values by the config keys that set them
(``model.net.*``, and the ``backbone.*`` or ``data.*`` keys that those take by default).
"""

from __future__ import annotations

from collections.abc import Sequence

NO_CLS_TOKEN = ("FactorisedSelfAttention", "FactorisedDotProduct")  # they pool the mean (ViViT §3.3)
SPLIT_HEADS = ("FactorisedDotProduct",)  # half of the heads over time, half over space (ViViT Eq. 7)


def check_network(network: str, embed_dim: int, num_heads: int, pool: str | None = None) -> None:
    """``pool`` (None: the network's default) and the heads suit ``network``."""
    pools = ["mean"] if network in NO_CLS_TOKEN else ["cls", "mean"]
    if pool is not None and pool not in pools:
        fix = "set model.net.pool=mean (it has no CLS token, ViViT §3.3)" if pools == ["mean"] else ""
        raise ValueError(
            f"{network} supports model.net.pool in {pools} only, got {pool!r}: {fix or f'choose one of {pools}'}"
        )
    check_heads(embed_dim, num_heads, network)
    if network in SPLIT_HEADS:
        check_split_heads(num_heads)


def check_heads(embed_dim: int, num_heads: int, network: str = "") -> None:
    """The heads share ``embed_dim`` evenly."""
    if embed_dim % num_heads:
        prefix = f"{network}: " if network else ""
        raise ValueError(
            f"{prefix}model.net.embed_dim={embed_dim} is not divisible by model.net.num_heads={num_heads}; "
            "choose another backbone or set backbone.embed_dim / backbone.num_heads"
        )


def check_split_heads(num_heads: int) -> None:
    """Factorised dot-product attention gives half of the heads to time and half to space."""
    if num_heads % 2:
        raise ValueError(
            f"factorised_dot_product splits the heads in half between space and time, so num_heads must be "
            f"even (got model.net.num_heads={num_heads}); choose another backbone or set backbone.num_heads"
        )


def check_patches(tokeniser: str, video_size: Sequence[int], patch_size: Sequence[int]) -> None:
    """``video_size`` (T, H, W) is cut into whole ``patch_size`` (pt, ph, pw) patches."""
    if len(video_size) != 3 or len(patch_size) != 3:
        raise ValueError(
            f"{tokeniser} needs model.net.tokeniser.video_size=[T, H, W] and model.net.tokeniser.patch_size="
            f"[pt, ph, pw], got {list(video_size)} and {list(patch_size)}"
        )
    fixes = {  # the keys that set each size in conf/ (tokeniser/*.yaml)
        "frames": "data.num_frames, or the temporal patch size, the first of model.net.tokeniser.patch_size",
        "height": "data.crop_size, or backbone.patch_size",
    }
    for name, size, patch in zip(("frames", "height", "width"), video_size, patch_size):
        if patch < 1 or size % patch:
            raise ValueError(
                f"{tokeniser}: the clip's {name} ({size}) is not divisible by the patch size {patch} "
                f"(model.net.tokeniser.video_size={list(video_size)}, model.net.tokeniser.patch_size="
                f"{list(patch_size)}); change {fixes.get(name, fixes['height'])}"
            )
