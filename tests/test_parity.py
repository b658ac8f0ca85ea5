"""transformers' ViViT checkpoints load into Model 1 and give the same logits as transformers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from vivit.models import FactorisedEncoder, SpatioTemporal, TubeletTokeniser
from vivit.models.init import HFViViTInit, InitError, adapt_hf_vivit, read_state_dict

transformers = pytest.importorskip("transformers")

T, S, D, DEPTH, HEADS, K = 4, 32, 32, 2, 2, 5


def model_1(gelu: str = "tanh") -> SpatioTemporal:
    tokeniser = TubeletTokeniser(embed_dim=D, video_size=(T, S, S), patch_size=(2, 8, 8))
    return SpatioTemporal(tokeniser, num_classes=K, embed_dim=D, depth=DEPTH, num_heads=HEADS, pool="cls", gelu=gelu)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A random transformers ViViT saved as the released checkpoints are (config.json + weights)."""
    torch.manual_seed(0)
    config = transformers.VivitConfig(
        image_size=S,
        num_frames=T,
        tubelet_size=[2, 8, 8],
        hidden_size=D,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        intermediate_size=4 * D,
        num_labels=K,
        id2label={i: f"class {i}" for i in range(K)},
        label2id={f"class {i}": i for i in range(K)},
    )  # hidden_act stays "gelu_fast", as in google/vivit-b-16x2-kinetics400
    hf = transformers.VivitForVideoClassification(config).eval()
    for p in hf.parameters():  # random everywhere, also where transformers starts at zero
        torch.nn.init.normal_(p, std=0.2)
    path = tmp_path_factory.mktemp("hf") / "vivit"
    hf.save_pretrained(path)
    return path, hf


# Logits here are about 0.6; a faithful port is within 1.2e-7, a port with exact GELU (transformers' ViViT
# uses the tanh approximation) off by 4e-5, one with LayerNorm eps 1e-5 instead of 1e-6 by 2e-6.
PARITY = {"rtol": 0.0, "atol": 5e-7}


def loaded(path: Path, gelu: str = "tanh", eps: float = 1e-6) -> SpatioTemporal:
    """Model 1 with the checkpoint's weights, the config.json checks bypassed (to build known-wrong ports)."""
    net = model_1(gelu).eval()
    state, _ = adapt_hf_vivit(read_state_dict(path), net)
    net.load_state_dict(state)
    for module in net.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = eps
    return net


def logits(hf: torch.nn.Module, net: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    video = torch.randn(4, 3, T, S, S)  # (B, C, T, H, W)
    with torch.no_grad():
        return net(video), hf(pixel_values=video.transpose(1, 2)).logits  # transformers takes (B, T, C, H, W)


def test_model_1_matches_transformers_vivit(released) -> None:
    path, hf = released
    net = model_1().eval()
    init = HFViViTInit(str(path))
    report = init(net)
    assert init.labels == [f"class {i}" for i in range(K)]
    assert not report.fresh and "head.weight" in report.copied
    torch.testing.assert_close(*logits(hf, net), **PARITY)


@pytest.mark.parametrize(("gelu", "eps"), [("none", 1e-6), ("tanh", 1e-5)])
def test_a_known_wrong_port_fails_the_parity_tolerance(released, gelu: str, eps: float) -> None:
    """Exact GELU or the wrong LayerNorm eps: close, but not within the tolerance the parity test uses."""
    path, hf = released
    ours, theirs = logits(hf, loaded(path, gelu, eps))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)  # the tolerance this test once used let it pass
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        torch.testing.assert_close(ours, theirs, **PARITY)


def with_config(released, tmp_path: Path, drop: str | None = None, **fields) -> Path:
    """A copy of the released checkpoint whose config.json has ``fields`` changed (and ``drop`` removed)."""
    path, _ = released
    copy = tmp_path / "vivit"
    shutil.copytree(path, copy)
    config = json.loads((copy / "config.json").read_text())
    config.pop(drop, None)
    (copy / "config.json").write_text(json.dumps({**config, **fields}))
    return copy


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"layer_norm_eps": 1e-5}, "layer_norm_eps=1e-05 cannot be reproduced here (the network has 1e-06)"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu' needs model.net.gelu='none' (the network has 'tanh')"),
        ({"hidden_act": "relu"}, "hidden_act='relu' cannot be reproduced here"),
        ({"qkv_bias": False}, "qkv_bias=False needs +model.net.qkv_bias=False"),
        ({"hidden_size": 64}, "hidden_size=64 needs backbone.embed_dim=64"),
        ({"num_hidden_layers": 3}, "num_hidden_layers=3 needs backbone.depth=3"),
        ({"num_attention_heads": 4}, "num_attention_heads=4 needs backbone.num_heads=4"),  # same shapes
        ({"intermediate_size": 64}, "intermediate_size=64 needs backbone.mlp_ratio=2.0"),
        ({"num_frames": 8}, "num_frames=8 needs data.num_frames=8"),
        ({"image_size": 64}, "image_size=64 needs data.crop_size=64"),
        ({"tubelet_size": [4, 8, 8]}, "tubelet_size=[4, 8, 8] needs model.net.tokeniser.patch_size=[4, 8, 8]"),
        ({"num_channels": 1}, "num_channels=1 needs +model.net.tokeniser.in_chans=1"),
        ({"id2label": {"0": "a", "1": "b", "2": "c"}}, "num_labels=3 needs data.num_classes=3"),
    ],
)
def test_every_config_field_that_changes_the_numbers_is_checked(released, tmp_path, fields, message) -> None:
    """The issue's case: a config.json with layer_norm_eps=1e-5 loaded silently, its logits 1e-5 off."""
    source = with_config(released, tmp_path, **fields)
    net = model_1()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(InitError, match=re.escape(f"{source}/config.json does not fit the network: ")) as error:
        HFViViTInit(str(source))(net)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # nothing loaded


def test_absent_config_fields_are_transformers_defaults(released, tmp_path: Path) -> None:
    """config.json written without hidden_act means transformers' default, gelu_fast (the tanh GELU)."""
    source = with_config(released, tmp_path, drop="hidden_act")
    HFViViTInit(str(source))(model_1("tanh"))
    with pytest.raises(InitError, match="hidden_act='gelu_fast' needs model.net.gelu='tanh'"):
        HFViViTInit(str(source))(model_1("none"))


def test_wrong_variant_is_named(released) -> None:
    path, _ = released
    tokeniser = TubeletTokeniser(embed_dim=D, video_size=(T, S, S), patch_size=(2, 8, 8))
    model_2 = FactorisedEncoder(tokeniser, num_classes=K, embed_dim=D, depth=DEPTH, num_heads=HEADS, gelu="tanh")
    with pytest.raises(InitError, match="use model=spatiotemporal"):
        HFViViTInit(str(path))(model_2)
