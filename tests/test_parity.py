"""transformers' ViViT checkpoints load into Model 1 and give the same logits as transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vivit.models import SpatioTemporal, TubeletTokeniser
from vivit.models.init import HFViViTInit, InitError

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
    )  # fmt: skip  (hidden_act stays "gelu_fast", as in google/vivit-b-16x2-kinetics400)
    hf = transformers.VivitForVideoClassification(config).eval()
    for p in hf.parameters():  # random everywhere, also where transformers starts at zero
        torch.nn.init.normal_(p, std=0.2)
    path = tmp_path_factory.mktemp("hf") / "vivit"
    hf.save_pretrained(path)
    return path, hf


def test_model_1_matches_transformers_vivit(released) -> None:
    path, hf = released
    net = model_1().eval()
    init = HFViViTInit(str(path))
    report = init(net)
    assert init.labels == [f"class {i}" for i in range(K)]
    assert not report.fresh and "head.weight" in report.copied
    video = torch.randn(2, 3, T, S, S)  # (B, C, T, H, W)
    with torch.no_grad():
        expected = hf(pixel_values=video.transpose(1, 2)).logits  # transformers takes (B, T, C, H, W)
        torch.testing.assert_close(net(video), expected, rtol=1e-4, atol=1e-4)


def test_wrong_activation_or_size_is_named(released) -> None:
    path, _ = released
    with pytest.raises(InitError, match="model.net.gelu='tanh'"):
        HFViViTInit(str(path))(model_1(gelu="none"))
    tokeniser = TubeletTokeniser(embed_dim=D, video_size=(T, S, S), patch_size=(2, 8, 8))
    deeper = SpatioTemporal(tokeniser, num_classes=K, embed_dim=D, depth=3, num_heads=HEADS, gelu="tanh")
    with pytest.raises(InitError, match=r"missing \['blocks\.2\."):
        HFViViTInit(str(path))(deeper)
