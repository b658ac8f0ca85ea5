"""Logits parity of Model 1 with transformers' VivitForVideoClassification (the same network)."""

from __future__ import annotations

import pytest
import torch

from vivit.models import SpatioTemporal, TubeletTokeniser

transformers = pytest.importorskip("transformers")


def to_transformers(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Our Model 1 keys (timm vocabulary) -> transformers' ViViT keys (v5 names)."""
    out = {
        "vivit.embeddings.cls_token": state["cls_token"],
        "vivit.embeddings.position_embeddings": state["pos_embed"],
        "vivit.embeddings.patch_embeddings.projection.weight": state["tokeniser.proj.weight"],
        "vivit.embeddings.patch_embeddings.projection.bias": state["tokeniser.proj.bias"],
        "vivit.layernorm.weight": state["norm.weight"],
        "vivit.layernorm.bias": state["norm.bias"],
        "classifier.weight": state["head.weight"],
        "classifier.bias": state["head.bias"],
    }
    for i in range(depth):
        ours, theirs = f"blocks.{i}.", f"vivit.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = state[f"{ours}attn.qkv.{kind}"].chunk(3)
            out |= {f"{theirs}attention.q_proj.{kind}": q, f"{theirs}attention.k_proj.{kind}": k}
            out |= {f"{theirs}attention.v_proj.{kind}": v}
            out[f"{theirs}attention.o_proj.{kind}"] = state[f"{ours}attn.proj.{kind}"]
            out[f"{theirs}layernorm_before.{kind}"] = state[f"{ours}norm1.{kind}"]
            out[f"{theirs}layernorm_after.{kind}"] = state[f"{ours}norm2.{kind}"]
            out[f"{theirs}mlp.fc1.{kind}"] = state[f"{ours}mlp.fc1.{kind}"]
            out[f"{theirs}mlp.fc2.{kind}"] = state[f"{ours}mlp.fc2.{kind}"]
    return out


def test_spatiotemporal_matches_transformers_vivit() -> None:
    torch.manual_seed(0)
    T, S, D, depth, heads, K = 4, 32, 32, 2, 2, 5
    tokeniser = TubeletTokeniser(embed_dim=D, video_size=(T, S, S), patch_size=(2, 8, 8))
    ours = SpatioTemporal(tokeniser, num_classes=K, embed_dim=D, depth=depth, num_heads=heads, pool="cls").eval()
    for p in ours.parameters():  # exercise every weight, including the zero-initialised CLS token
        torch.nn.init.normal_(p, std=0.2)
    config = transformers.VivitConfig(
        image_size=S, num_frames=T, tubelet_size=[2, 8, 8], hidden_size=D, num_hidden_layers=depth,
        num_attention_heads=heads, intermediate_size=4 * D, num_labels=K, hidden_act="gelu", layer_norm_eps=1e-6,
    )  # fmt: skip
    theirs = transformers.VivitForVideoClassification(config).eval()
    missing, unexpected = theirs.load_state_dict(to_transformers(ours.state_dict(), depth), strict=True)
    assert not missing and not unexpected

    video = torch.randn(2, 3, T, S, S)  # (B, C, T, H, W)
    with torch.no_grad():
        expected = theirs(pixel_values=video.transpose(1, 2)).logits  # transformers takes (B, T, C, H, W)
        torch.testing.assert_close(ours(video), expected, rtol=1e-4, atol=1e-5)
