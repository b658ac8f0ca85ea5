"""The ViViT variants: shapes, gradients, determinism, the paper's Table 2 and invalid combinations."""

import subprocess
import sys

import pytest
import torch

from vivit.models import (
    FactorisedDotProduct,
    FactorisedEncoder,
    FactorisedSelfAttention,
    SpatioTemporal,
    TubeletTokeniser,
    UniformFrameTokeniser,
    count_macs,
    count_params,
)

VARIANTS = {
    "spatiotemporal": (SpatioTemporal, {}),
    "factorised_encoder": (FactorisedEncoder, {"temporal_depth": 1}),
    "factorised_encoder_avg_pool": (FactorisedEncoder, {"temporal_depth": 0}),
    "factorised_self_attention": (FactorisedSelfAttention, {}),
    "factorised_dot_product": (FactorisedDotProduct, {}),
}
TOKENISERS = {"uniform_frame": UniformFrameTokeniser, "tubelet": TubeletTokeniser}
B, C, T, H, W = 2, 3, 4, 32, 32
K = 5


def tiny(variant: str, tokeniser: str, **overrides) -> torch.nn.Module:
    cls, extra = VARIANTS[variant]
    tok = TOKENISERS[tokeniser](embed_dim=32, video_size=(T, H, W), patch_size=(2, 8, 8))
    kwargs = dict(num_classes=K, embed_dim=32, depth=2, num_heads=2, **extra)
    if cls in (FactorisedSelfAttention, FactorisedDotProduct):
        kwargs["pool"] = "mean"
    return cls(tok, **{**kwargs, **overrides})


@pytest.mark.parametrize("tokeniser", TOKENISERS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_backward(variant: str, tokeniser: str) -> None:
    torch.manual_seed(0)
    net = tiny(variant, tokeniser, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1)
    video = torch.randn(B, C, T, H, W)
    logits = net(video)
    assert logits.shape == (B, K)
    assert torch.isfinite(logits).all()
    logits.square().sum().backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(video), net(video), rtol=0, atol=0)


def test_token_grid_is_time_major() -> None:
    tok = TubeletTokeniser(embed_dim=8, video_size=(4, 16, 16), patch_size=(2, 8, 8))
    video = torch.zeros(1, 3, 4, 16, 16)
    video[:, :, 2:, 8:, :8] = 1.0  # second tubelet in time, bottom-left patch
    with torch.no_grad():
        tok.proj.bias.zero_()
        tok.proj.weight.fill_(1.0)
        tokens = tok(video)  # (B, t, s, D)
    assert tokens.shape == (1, 2, 4, 8)
    lit = (tokens[0, :, :, 0] > 0).nonzero().tolist()
    assert lit == [[1, 2]]  # frame 1, spatial index h·w_n + w = 1·2 + 0


def test_central_frame_tubelet_equals_uniform_frame_sampling() -> None:
    """ViViT Eq. 9: a tubelet kernel that is zero except at pt // 2 samples frames like uniform sampling."""
    torch.manual_seed(0)
    uniform = UniformFrameTokeniser(embed_dim=16, video_size=(8, 16, 16), patch_size=(4, 8, 8))
    tubelet = TubeletTokeniser(embed_dim=16, video_size=(8, 16, 16), patch_size=(4, 8, 8))
    with torch.no_grad():
        tubelet.proj.weight.zero_()
        tubelet.proj.weight[:, :, 4 // 2] = uniform.proj.weight
        tubelet.proj.bias.copy_(uniform.proj.bias)
        video = torch.randn(2, 3, 8, 16, 16)
        torch.testing.assert_close(tubelet(video), uniform(video))


@pytest.mark.parametrize("temporal_depth", [0, 1])
def test_factorised_encoder_sees_frame_order_only_with_temporal_layers(temporal_depth: int) -> None:
    """Uniform frames played backwards: the temporal encoder's output changes; the average pool's cannot."""
    torch.manual_seed(0)
    net = tiny("factorised_encoder", "uniform_frame", temporal_depth=temporal_depth).eval()
    video = torch.randn(B, C, T // 2, H, W).repeat_interleave(2, dim=2)  # pt = 2: each sampled frame twice

    def pooled(video: torch.Tensor) -> torch.Tensor:  # what the classifier reads, (B, D), of unit scale
        return net.pool_tokens(net.forward_features(video))

    with torch.no_grad():
        frames, reversed_frames = net.forward_spatial(video), net.forward_spatial(video.flip(2))
        torch.testing.assert_close(reversed_frames, frames.flip(1))  # the same frames, in reverse order
        change = (pooled(video) - pooled(video.flip(2))).abs().max().item()
    assert change > 1e-5 if temporal_depth else change < 1e-6  # at initialisation: ~5e-4 vs exactly 0


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_average_pool_baseline_classifies_the_mean_frame_embedding(pool: str) -> None:
    torch.manual_seed(0)
    net = tiny("factorised_encoder_avg_pool", "tubelet", pool=pool).eval()
    video = torch.randn(B, C, T, H, W)
    with torch.no_grad():
        torch.testing.assert_close(net(video), net.head(net.forward_spatial(video).mean(dim=1)))
    assert not any(k.startswith("temporal.") for k in net.state_dict())  # no temporal parameters


def test_temporal_pos_std_sets_the_temporal_positional_embedding_scale() -> None:
    torch.manual_seed(0)
    tok = UniformFrameTokeniser(embed_dim=64, video_size=(64, 8, 8), patch_size=(2, 8, 8))  # 32 frames

    def build(**kwargs) -> FactorisedEncoder:
        return FactorisedEncoder(tok, 5, embed_dim=64, depth=1, num_heads=2, temporal_depth=1, **kwargs)

    for std, net in ((0.02, build()), (0.02, build(temporal_pos_std=0.02)), (1.0, build(temporal_pos_std=1.0))):
        assert net.temporal.pos_embed.std().item() == pytest.approx(std, rel=0.2)  # default: the official 0.02
        assert net.pos_embed.std().item() == pytest.approx(0.02, rel=0.2)  # the spatial one keeps 0.02
    with pytest.raises(ValueError, match="temporal_pos_std"):
        FactorisedEncoder(tok, 5, embed_dim=64, depth=1, num_heads=2, temporal_pos_std=-1.0)


def test_factorised_dot_product_has_model_1_parameters() -> None:
    m1 = tiny("spatiotemporal", "tubelet", pool="mean")
    m4 = tiny("factorised_dot_product", "tubelet")
    assert {n: p.shape for n, p in m1.named_parameters()} == {n: p.shape for n, p in m4.named_parameters()}


def test_factorised_dot_product_head_split() -> None:
    """With one frame, temporal heads see only the token itself: their output is v; spatial heads differ."""
    torch.manual_seed(0)
    net = tiny("factorised_dot_product", "tubelet")
    attn = net.blocks[0].attn
    x = torch.randn(2, 2, 16, 32)  # (B, t, s, D)
    with torch.no_grad():
        attn.proj.weight.copy_(torch.eye(32))
        attn.proj.bias.zero_()
        y = attn(x)
        v = attn.qkv(x)[..., 64:]
        # temporal half (first 16 channels): attention over the 2 frames at the same position
        q, k = attn.qkv(x)[..., :16], attn.qkv(x)[..., 32:48]
        w = torch.softmax(torch.einsum("btsd,busd->bstu", q, k) / 16**0.5, dim=-1)
        expected_t = torch.einsum("bstu,busd->btsd", w, v[..., :16])
        torch.testing.assert_close(y[..., :16], expected_t, rtol=1e-4, atol=1e-5)
        q, k = attn.qkv(x)[..., 16:32], attn.qkv(x)[..., 48:64]
        w = torch.softmax(torch.einsum("btsd,btrd->btsr", q, k) / 16**0.5, dim=-1)
        expected_s = torch.einsum("btsr,btrd->btsd", w, v[..., 16:])
        torch.testing.assert_close(y[..., 16:], expected_s, rtol=1e-4, atol=1e-5)


# ViViT-B/16x2, 32×224², 400 classes: (params ×10⁶, GFLOPs = GMACs) from the paper's Table 2.
TABLE_2 = {
    "Model 1: spatio-temporal": (SpatioTemporal, {}, 88.9, 455.2),
    "Model 2: factorised encoder": (FactorisedEncoder, {"temporal_depth": 4}, 115.1, 284.4),
    "Model 3: factorised self-attention": (FactorisedSelfAttention, {"pool": "mean"}, 117.3, 372.3),
    "Model 4: factorised dot product": (FactorisedDotProduct, {"pool": "mean"}, 88.9, 277.1),
    "Model 2: average-pool baseline": (FactorisedEncoder, {"temporal_depth": 0}, 86.7, 283.9),
}


@pytest.mark.parametrize("row", TABLE_2)
def test_table_2_params_and_flops(row: str) -> None:
    cls, extra, params_m, gflops = TABLE_2[row]
    with torch.device("meta"):
        tok = TubeletTokeniser(embed_dim=768, video_size=(32, 224, 224), patch_size=(2, 16, 16))
        net = cls(tok, num_classes=400, embed_dim=768, depth=12, num_heads=12, **extra)
    assert count_params(net) / 1e6 == pytest.approx(params_m, rel=0.01)
    assert count_macs(net, (1, 3, 32, 224, 224)) / 1e9 == pytest.approx(gflops, rel=0.02)


@pytest.mark.parametrize("tokeniser", TOKENISERS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_macs_of_a_cpu_network_are_those_of_a_meta_network(variant: str, tokeniser: str) -> None:
    """torch's FLOP counter has no formula for the CPU SDPA kernel: counted on the CPU, attention went missing."""
    cpu = tiny(variant, tokeniser)
    with torch.device("meta"):
        meta = tiny(variant, tokeniser)
    assert count_macs(cpu, (B, C, T, H, W)) == count_macs(meta, (B, C, T, H, W))


def test_table_2_model_1_built_on_the_cpu() -> None:
    """The issue's case: ViViT-B/16x2 Model 1 built on the CPU counted about 270 G instead of Table 2's 455.2 G."""
    tok = TubeletTokeniser(embed_dim=768, video_size=(32, 224, 224), patch_size=(2, 16, 16))
    net = SpatioTemporal(tok, num_classes=400, embed_dim=768, depth=12, num_heads=12).train()
    before = net.pos_embed.clone()
    assert count_macs(net, (1, 3, 32, 224, 224)) / 1e9 == pytest.approx(455.2, rel=0.02)
    assert net.training and torch.equal(net.pos_embed, before)  # the network is left as it was


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: tiny("factorised_self_attention", "tubelet", pool="cls"), "pool=mean"),
        (lambda: tiny("factorised_dot_product", "tubelet", pool="cls"), "pool=mean"),
        (lambda: tiny("factorised_dot_product", "tubelet", num_heads=1), "num_heads must be even"),
        (lambda: TubeletTokeniser(embed_dim=8, video_size=(5, 32, 32), patch_size=(2, 8, 8)), "frames (5)"),
        (lambda: UniformFrameTokeniser(embed_dim=8, video_size=(4, 30, 32), patch_size=(2, 8, 8)), "height (30)"),
        (lambda: tiny("spatiotemporal", "tubelet", embed_dim=48), "embed_dim"),
        (lambda: tiny("spatiotemporal", "tubelet", pool="max"), "pool"),
    ],
)
def test_invalid_combinations_raise(build, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_wrong_input_shape_names_expected_shape() -> None:
    net = tiny("spatiotemporal", "tubelet")
    with pytest.raises(ValueError, match=r"\(B, 3, 4, 32, 32\)"):
        net(torch.randn(2, 3, 8, 32, 32))


def test_no_weight_decay_names_embeddings() -> None:
    net = tiny("factorised_encoder", "tubelet")
    assert net.no_weight_decay() == {"cls_token", "pos_embed", "temporal.cls_token", "temporal.pos_embed"}


def test_models_import_only_torch_einops_timm() -> None:
    """vivit.models must run on a bare GPU image: it imports and runs with Lightning, Hydra, PyAV, W&B blocked."""
    code = """
import sys
for name in ("lightning", "pytorch_lightning", "hydra", "omegaconf", "av", "wandb", "torchmetrics", "sklearn"):
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
import torch
from vivit.models import FactorisedEncoder, TubeletTokeniser
net = FactorisedEncoder(TubeletTokeniser(32, (4, 32, 32), (2, 8, 8)), 5, embed_dim=32, depth=1, num_heads=2)
assert net(torch.randn(1, 3, 4, 32, 32)).shape == (1, 5)
"""
    subprocess.run([sys.executable, "-c", code], check=True)
