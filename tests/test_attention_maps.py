"""Attention maps: recording leaves the outputs alone, rollout is row-stochastic and right on hand-made
cases, every variant gives a (B, t, h, w) map, and the overlays are written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from test_models import TOKENISERS, VARIANTS, B, C, H, T, W, tiny
from vivit.attention_maps import (
    attention_rollout,
    overlay,
    rollout,
    rollout_relevance,
    save_frames,
    upsample,
    with_residual,
)
from vivit.models import record_attention

POOLS = [(variant, "cls" if variant.startswith(("spatio", "factorised_encoder")) else "mean") for variant in VARIANTS]
POOLS += [("spatiotemporal", "mean"), ("factorised_encoder", "mean")]


@pytest.mark.parametrize("tokeniser", TOKENISERS)
@pytest.mark.parametrize(("variant", "pool"), POOLS)
def test_every_variant_records_and_maps(variant: str, pool: str, tokeniser: str) -> None:
    torch.manual_seed(0)
    net = tiny(variant, tokeniser, pool=pool).eval()
    video = torch.randn(B, C, T, H, W)
    with torch.no_grad():
        fast = net(video)
        with record_attention() as attentions:
            recorded = net(video)
    torch.testing.assert_close(recorded, fast, rtol=0, atol=1e-6)  # the explicit softmax is what SDPA computes
    assert attentions and all(torch.allclose(a.sum(-1), torch.ones(())) for a in attentions)

    relevance = attention_rollout(net, video)
    t, h, w = net.tokeniser.grid_size
    assert relevance.shape == (B, t, h, w)
    assert (relevance >= 0).all()
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), torch.ones(B))
    assert upsample(relevance, net.tokeniser).shape == (B, T, H, W)


def test_recording_is_off_outside_the_context() -> None:
    net = tiny("spatiotemporal", "tubelet").eval()
    with record_attention() as attentions:
        net(torch.randn(1, C, T, H, W))
    net(torch.randn(1, C, T, H, W))
    assert len(attentions) == len(net.blocks)


def test_rollout_rows_sum_to_one_and_identity_is_kept() -> None:
    torch.manual_seed(0)
    mixes = [with_residual(torch.rand(3, 5, 5).softmax(-1)) for _ in range(4)]
    torch.testing.assert_close(rollout(mixes).sum(-1), torch.ones(3, 5))
    eye = torch.eye(5).expand(3, 5, 5)
    torch.testing.assert_close(rollout([with_residual(eye)] * 3), eye)
    # one layer: (A + I)/2 for a row-stochastic A
    torch.testing.assert_close(rollout(mixes[:1]), mixes[0])


@pytest.mark.parametrize(("variant", "pool"), POOLS)
def test_uniform_attention_gives_a_uniform_map(variant: str, pool: str) -> None:
    """With zero query/key weights every attention is uniform, so every token is equally relevant."""
    net = tiny(variant, "tubelet", pool=pool)
    for name, param in net.named_parameters():
        if "qkv" in name:
            torch.nn.init.zeros_(param)
    relevance = attention_rollout(net, torch.randn(B, C, T, H, W))
    t, h, w = net.tokeniser.grid_size
    torch.testing.assert_close(relevance, torch.full_like(relevance, 1 / (t * h * w)))


def test_factorised_self_attention_composes_space_then_time() -> None:
    """Model 3, one block: every query attends to patch 0 of its frame (spatial) and to frame 0
    (temporal). With mean pooling the query q is uniform, and the map is q·T̂·Ŝ by hand."""
    net = tiny("factorised_self_attention", "tubelet", depth=1)
    t, s = net.tokeniser.num_frames, net.tokeniser.num_spatial
    spatial = torch.zeros(B * t, 2, s, s)
    spatial[..., 0] = 1  # all to patch 0
    temporal = torch.zeros(B * s, 2, t, t)
    temporal[..., 0] = 1  # all to frame 0
    relevance = rollout_relevance(net, [spatial, temporal]).view(B, t, s)

    n = t * s
    after_time = torch.full((t, s), 0.5 / n)  # T̂ = (I + T)/2: half stays, half goes to frame 0
    after_time[0] += 0.5 / s
    expected = 0.5 * after_time  # Ŝ = (I + S)/2: half stays, half goes to patch 0 of the frame
    expected[:, 0] += 0.5 * after_time.sum(dim=1)
    torch.testing.assert_close(relevance, expected.expand(B, t, s))


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_overlays_are_written(suffix: str, tmp_path: Path) -> None:
    net = tiny("factorised_encoder", "uniform_frame")
    video = torch.randn(1, C, T, H, W)
    heat = upsample(attention_rollout(net, video), net.tokeniser)[0]  # (T, H, W)
    frames = overlay(video[0], heat, mean=[0.5] * 3, std=[0.5] * 3)
    assert frames.shape == (T, H, W, 3) and frames.dtype.name == "uint8"
    path = save_frames(frames, tmp_path / f"maps{suffix}", scale=2, columns=2)
    with Image.open(path) as image:
        if suffix == ".gif":
            assert image.n_frames == T and image.size == (2 * W, 2 * H)
        else:
            assert image.size == (2 * 2 * W, 2 * 2 * H)  # 2 columns × 2 rows of 2× frames
