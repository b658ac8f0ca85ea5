"""Initialisation from an image ViT (ViViT §3.4): exact identities after init, and strict loading; and a released
video ViViT's classifier kept or replaced (``init.classifier``) for fine-tuning on other classes.

Tiny random timm ViTs saved to disk stand in for pretrained checkpoints (and the tiny transformers and Scenic
ViViTs of test_parity.py and test_scenic.py for released video models); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from scipy import ndimage
from timm.models.vision_transformer import VisionTransformer

from test_parity import released  # noqa: F401  (a fixture: a tiny random transformers ViViT, saved)
from test_scenic import network as scenic_network
from test_scenic import save as save_scenic
from test_scenic import scenic_params
from vivit.models import (
    FactorisedDotProduct,
    FactorisedEncoder,
    FactorisedSelfAttention,
    SpatioTemporal,
    TubeletTokeniser,
    UniformFrameTokeniser,
)
from vivit.models.init import (
    HFViViTInit,
    ImageViTInit,
    InitError,
    InitReport,
    ScenicViViTInit,
    adapt_image_vit,
    read_state_dict,
    source_normalisation,
)

D, DEPTH, HEADS, P, S, T = 32, 2, 2, 8, 32, 4


def image_vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=S, patch_size=P, embed_dim=D, depth=DEPTH, num_heads=HEADS, num_classes=10, **kwargs
    )
    for p in vit.parameters():  # random everywhere, also where timm starts at zero
        torch.nn.init.normal_(p, std=0.2)
    return vit.eval()


def video_net(cls, tokeniser=TubeletTokeniser, pt: int = 2, num_classes: int = 5, **kwargs):
    tok = tokeniser(embed_dim=D, video_size=(T, S, S), patch_size=(pt, P, P))
    return cls(tok, num_classes=num_classes, embed_dim=D, depth=DEPTH, num_heads=HEADS, **kwargs).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vit") / "vit.pth"
    torch.save(image_vit().state_dict(), path)
    return path


def frames_of(video: torch.Tensor) -> torch.Tensor:
    return video.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B·T, C, H, W)


def test_central_frame_tubelet_embeds_the_central_frame(checkpoint: Path) -> None:
    vit = image_vit()
    net = video_net(SpatioTemporal, pt=2)
    ImageViTInit(str(checkpoint), tubelet="central_frame")(net)
    video = torch.randn(2, 3, T, S, S)
    with torch.no_grad():
        tokens = net.tokeniser(video)  # (B, t, s, D)
        central = video[:, :, 1::2]  # slice pt // 2 = 1 of each 2-frame tubelet
        expected = vit.patch_embed(frames_of(central)).reshape(2, T // 2, -1, D)
    torch.testing.assert_close(tokens, expected)


def test_average_tubelet_on_a_static_clip_is_the_image_embedding(checkpoint: Path) -> None:
    vit = image_vit()
    net = video_net(SpatioTemporal, pt=4)
    ImageViTInit(str(checkpoint), tubelet="average")(net)
    frame = torch.randn(2, 3, S, S)
    video = frame[:, :, None].expand(-1, -1, T, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(net.tokeniser(video)[:, 0], vit.patch_embed(frame), rtol=1e-5, atol=1e-5)


def test_tiled_positional_embedding(checkpoint: Path) -> None:
    vit = image_vit()
    net = video_net(SpatioTemporal)
    report = ImageViTInit(str(checkpoint))(net)
    t = net.tokeniser.num_frames
    grid = vit.pos_embed[:, 1:]
    assert torch.equal(net.pos_embed[:, :1], vit.pos_embed[:, :1])  # the CLS entry, once
    for i in range(t):
        assert torch.equal(net.pos_embed[:, 1 + i * grid.shape[1] : 1 + (i + 1) * grid.shape[1]], grid)
    assert "tiled over 2 frames" in report.transformed["pos_embed"]


@pytest.mark.parametrize(("before", "after"), [(14, 16), (6, 4)])  # 14 → 16: SSv2's 256 crop on a 224 ViT
def test_positional_grid_is_resized_as_scenic(before: int, after: int) -> None:
    """Scenic resizes the image grid with scipy.ndimage.zoom(order=1): bilinear, corners aligned."""
    vit = VisionTransformer(img_size=before * P, patch_size=P, embed_dim=D, depth=DEPTH, num_heads=HEADS)
    torch.nn.init.normal_(vit.pos_embed, std=0.5)
    tokeniser = TubeletTokeniser(D, (T, after * P, after * P), (2, P, P))
    net = SpatioTemporal(tokeniser, num_classes=5, embed_dim=D, depth=DEPTH, num_heads=HEADS)
    state, report = adapt_image_vit(vit.state_dict(), net)
    grid = vit.pos_embed[0, 1:].detach().reshape(before, before, D).double().numpy()
    zoomed = torch.from_numpy(ndimage.zoom(grid, (after / before, after / before, 1), order=1)).float()
    frame = state["pos_embed"][0, 1 : 1 + after * after].reshape(after, after, D)
    torch.testing.assert_close(frame, zoomed, rtol=0, atol=5e-6)  # timm resizes in float32; a wrong resize: 0.2+
    assert torch.equal(state["pos_embed"][:, :1], vit.pos_embed[:, :1])  # the CLS entry is not resized
    assert f"{before}×{before} → {after}×{after} (bilinear, corners aligned" in report.transformed["pos_embed"]


def test_model_3_with_zero_temporal_attention_is_the_image_vit_per_frame(tmp_path: Path) -> None:
    vit = image_vit(class_token=False, global_pool="avg", fc_norm=False)  # no CLS, norm before pooling, as Model 3
    path = tmp_path / "vit.safetensors"
    save_file(vit.state_dict(), str(path))
    net = video_net(FactorisedSelfAttention, tokeniser=UniformFrameTokeniser, pt=1, pool="mean")
    report = ImageViTInit(str(path), temporal_attn="zero")(net)
    video = torch.randn(2, 3, T, S, S)
    with torch.no_grad():
        tokens = net.forward_features(video).reshape(2, T, -1, D)  # (B, t, s, D)
        expected = vit.forward_features(frames_of(video)).reshape(2, T, -1, D)
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-5)
    assert all(how.startswith("zero") for k, how in report.transformed.items() if "temporal_attn" in k)


def test_model_3_copy_temporal_attention(checkpoint: Path) -> None:
    net = video_net(FactorisedSelfAttention, pool="mean")
    ImageViTInit(str(checkpoint), temporal_attn="copy")(net)
    assert torch.equal(net.blocks[1].temporal_attn.qkv.weight, net.blocks[1].attn.qkv.weight)


def test_model_2_spatial_cls_output_is_the_image_vit_cls_output(checkpoint: Path) -> None:
    vit = image_vit()
    net = video_net(FactorisedEncoder, tokeniser=UniformFrameTokeniser, pt=1, pool="cls", temporal_depth=1)
    report = ImageViTInit(str(checkpoint))(net)
    video = torch.randn(2, 3, T, S, S)
    with torch.no_grad():
        frames = net.forward_spatial(video)  # (B, t, D)
        expected = vit.forward_features(frames_of(video))[:, 0].reshape(2, T, D)
    torch.testing.assert_close(frames, expected, rtol=1e-4, atol=1e-5)
    assert report.transformed["pos_embed"].startswith("shared by all frames")


EXPECTED_FRESH = {
    SpatioTemporal: {"head.weight", "head.bias"},
    FactorisedDotProduct: {"head.weight", "head.bias"},
    FactorisedSelfAttention: {"head.weight", "head.bias"}
    | {f"blocks.{i}.temporal_norm.{p}" for i in range(DEPTH) for p in ("weight", "bias")},
    FactorisedEncoder: {"head.weight", "head.bias"},  # + every temporal.* key, added below
}


@pytest.mark.parametrize("cls", list(EXPECTED_FRESH))
@pytest.mark.parametrize("tubelet", ["central_frame", "average", "random"])
def test_expected_fresh_keys_are_exact(cls, tubelet: str, checkpoint: Path) -> None:
    kwargs = {"pool": "mean"} if cls in (FactorisedSelfAttention, FactorisedDotProduct) else {}
    net = video_net(cls, **kwargs)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = ImageViTInit(str(checkpoint), tubelet=tubelet)(net)
    expected = set(EXPECTED_FRESH[cls]) | {k for k in net.state_dict() if k.startswith("temporal.")}
    if tubelet == "random":
        expected |= {"tokeniser.proj.weight", "tokeniser.proj.bias"}
    assert set(report.fresh) == expected
    assert all(torch.equal(net.state_dict()[k], before[k]) for k in report.fresh)
    assert not any(torch.equal(net.state_dict()[k], before[k]) for k in report.copied)
    assert set(report.copied) | set(report.transformed) | set(report.fresh) == set(net.state_dict())
    assert "head.weight" in report.unused  # the image classifier is never loaded


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda sd: sd.pop("blocks.1.mlp.fc1.weight"), "missing key 'blocks.1.mlp.fc1.weight'"),
        (lambda sd: sd.__setitem__("blocks.2.norm1.weight", torch.ones(D)), r"blocks\.2\.norm1\.weight"),
        (lambda sd: sd.__setitem__("norm.weight", torch.ones(D + 1)), r"'norm.weight' has shape \(33,\)"),
        (lambda sd: sd.__setitem__("blocks.0.attn.qkv.weight", torch.ones(3 * D, D + 1)), "blocks.0.attn.qkv.weight"),
    ],
)
def test_mismatched_checkpoint_raises_naming_the_key(corrupt, message: str, tmp_path: Path) -> None:
    state = image_vit().state_dict()
    corrupt(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(InitError, match=message):
        ImageViTInit(str(path))(video_net(SpatioTemporal))


def test_not_a_checkpoint_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="bad.pth|pickle|load"):
        ImageViTInit(str(path))(video_net(SpatioTemporal))
    with pytest.raises(FileNotFoundError, match="init.source"):
        ImageViTInit(str(tmp_path / "none.pth"))(video_net(SpatioTemporal))


def test_transformers_vit_checkpoint_is_an_image_vit_source(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    sizes = dict(image_size=S, patch_size=P, hidden_size=D, num_hidden_layers=DEPTH, num_attention_heads=HEADS)
    sizes.update(intermediate_size=4 * D, hidden_act="gelu", layer_norm_eps=1e-6)
    config = transformers.ViTConfig(**sizes, num_labels=10)
    hf = transformers.ViTForImageClassification(config).eval()
    hf.save_pretrained(tmp_path / "hf_vit")
    net = video_net(FactorisedEncoder, tokeniser=UniformFrameTokeniser, pt=1, pool="cls", temporal_depth=1)
    ImageViTInit(str(tmp_path / "hf_vit"))(net)
    video = torch.randn(2, 3, T, S, S)
    with torch.no_grad():  # the spatial encoder is now the transformers ViT, frame by frame
        expected = hf.vit(pixel_values=frames_of(video)).last_hidden_state[:, 0].reshape(2, T, D)
        torch.testing.assert_close(net.forward_spatial(video), expected, rtol=1e-4, atol=1e-4)


def to_google_npz(vit: VisionTransformer, path: Path) -> None:
    """Write a timm ViT in the layout of Google's original ViT .npz files (the reverse of timm's loader)."""
    import numpy as np

    sd = {k: v.detach().numpy() for k, v in vit.state_dict().items()}
    dh = D // HEADS
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
    }
    for i in range(DEPTH):
        b, o = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = o + "MultiHeadDotProductAttention_1/"
        for j, name in enumerate(("query", "key", "value")):
            out[f"{mha}{name}/kernel"] = sd[b + "attn.qkv.weight"][j * D : (j + 1) * D].T.reshape(D, HEADS, dh)
            out[f"{mha}{name}/bias"] = sd[b + "attn.qkv.bias"][j * D : (j + 1) * D].reshape(HEADS, dh)
        out[mha + "out/kernel"] = sd[b + "attn.proj.weight"].reshape(D, HEADS, dh).transpose(1, 2, 0)
        out[mha + "out/bias"] = sd[b + "attn.proj.bias"]
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f"{o}{ln}/scale"], out[f"{o}{ln}/bias"] = sd[b + norm + ".weight"], sd[b + norm + ".bias"]
        for r in range(2):
            out[f"{o}MlpBlock_3/Dense_{r}/kernel"] = sd[f"{b}mlp.fc{r + 1}.weight"].T
            out[f"{o}MlpBlock_3/Dense_{r}/bias"] = sd[f"{b}mlp.fc{r + 1}.bias"]
    np.savez(path, **out)


def test_google_npz_is_read_through_timm(tmp_path: Path) -> None:
    vit = image_vit()
    to_google_npz(vit, tmp_path / "ViT-tiny.npz")
    state = read_state_dict(tmp_path / "ViT-tiny.npz")
    assert state.keys() == vit.state_dict().keys()
    for key, value in vit.state_dict().items():
        torch.testing.assert_close(state[key], value, msg=key)


def test_normalisation_comes_from_the_checkpoint(tmp_path: Path, checkpoint: Path) -> None:
    to_google_npz(image_vit(), tmp_path / "vit.npz")
    report = ImageViTInit(str(tmp_path / "vit.npz"))(video_net(SpatioTemporal))
    assert (report.mean, report.std) == ((0.5,) * 3, (0.5,) * 3)  # Google ViT: [-1, 1]
    assert source_normalisation("timm:deit_tiny_patch16_224") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert ImageViTInit(str(checkpoint))(video_net(SpatioTemporal)).mean is None  # a bare state dict does not say
    explicit = ImageViTInit(str(checkpoint), mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))(video_net(SpatioTemporal))
    assert (explicit.mean, explicit.std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))


def test_image_vit_pretrained_on_builtin_frames_initialises_the_video_model(data_dir: Path, tmp_path: Path) -> None:
    from vivit.image_pretraining import pretrain_image_vit

    out = tmp_path / "image_vit.pth"
    accuracy = pretrain_image_vit(
        data_dir / "moving_digits",
        out,
        embed_dim=D,
        depth=DEPTH,
        num_heads=HEADS,
        patch_size=P,
        epochs=1,
        batch_size=16,
    )
    assert 0.0 <= accuracy <= 1.0
    report = ImageViTInit(str(out))(video_net(SpatioTemporal))
    assert set(report.fresh) == {"head.weight", "head.bias"}


@pytest.mark.parametrize("name", ["ImageViTInit", "HFViViTInit", "ScenicViViTInit"])
def test_the_init_targets_that_checkpoints_store_still_resolve(name: str) -> None:
    """Run configs stored in checkpoints name each init as vivit.models.init.<class> (conf/init/*.yaml)."""
    from hydra.utils import get_class

    assert get_class(f"vivit.models.init.{name}").__name__ == name


# --- A released video model's classifier: kept (same classes) or replaced (fine-tuning on other classes) ---


@pytest.fixture
def transformers_vivit(released) -> Path:  # noqa: F811  (test_parity's fixture, imported above)
    """A tiny random transformers ViViT (config.json + weights) with 5 classes."""
    return released[0]


def assert_classifier_replaced(net, before: dict, reference, report: InitReport, unused: list[str]) -> None:
    """``net`` has ``reference``'s weights (the checkpoint loaded with its classifier) everywhere but its head,
    which is still its own initialisation (``before``), and the report says so."""
    assert report.fresh == ["head.weight", "head.bias"] and sorted(report.unused) == sorted(unused)
    assert set(report.copied) | set(report.transformed) == set(net.state_dict()) - set(report.fresh)
    for key, value in reference.state_dict().items():
        if key.startswith("head."):
            assert torch.equal(net.state_dict()[key], before[key]), key  # left as initialised
        else:
            assert torch.equal(net.state_dict()[key], value), key
    assert "fresh head.weight" in str(report)


@pytest.mark.parametrize("classes", [101, 5])  # UCF-101's count, and the checkpoint's own
def test_hf_vivit_replace_loads_the_backbone_and_keeps_a_new_classifier(transformers_vivit: Path, classes: int) -> None:
    path = transformers_vivit
    reference = video_net(SpatioTemporal, pool="cls", gelu="tanh")
    HFViViTInit(str(path))(reference)  # keep (the default): everything, classifier included
    net = video_net(SpatioTemporal, num_classes=classes, pool="cls", gelu="tanh")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    init = HFViViTInit(str(path), classifier="replace")
    report = init(net)
    assert net.head.weight.shape == (classes, D)
    assert_classifier_replaced(net, before, reference, report, ["classifier.weight", "classifier.bias"])
    assert init.labels == [str(i) for i in range(classes)]  # the checkpoint's names are not these classes'


@pytest.mark.parametrize("model", [1, 2])
def test_scenic_vivit_replace_loads_the_backbone_and_keeps_a_new_classifier(model: int, tmp_path: Path) -> None:
    path = save_scenic(tmp_path / "checkpoint_3", scenic_params(model))
    reference = scenic_network(model)
    ScenicViViTInit(str(path))(reference)
    net = scenic_network(model, num_classes=51)  # HMDB-51's count
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = ScenicViViTInit(str(path), classifier="replace")(net)
    assert net.head.weight.shape == (51, D)
    assert_classifier_replaced(net, before, reference, report, ["output_projection/bias", "output_projection/kernel"])


def test_a_kept_classifier_of_another_class_count_is_refused_naming_the_key(
    transformers_vivit: Path, tmp_path: Path
) -> None:
    """keep (the default) with data.num_classes other than the checkpoint's: one line naming both ways out."""
    path = transformers_vivit
    net = video_net(SpatioTemporal, num_classes=101, pool="cls", gelu="tanh")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(InitError, match="num_labels=5 needs data.num_classes=5, or init.classifier=replace") as hf:
        HFViViTInit(str(path))(net)
    scenic = save_scenic(tmp_path / "checkpoint_1", scenic_params(1))
    with pytest.raises(InitError, match="set data.num_classes=5, or init.classifier=replace") as flax:
        ScenicViViTInit(str(scenic))(scenic_network(1, num_classes=101))
    assert "\n" not in str(hf.value) + str(flax.value)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # nothing loaded


def test_a_replaced_classifier_leaves_every_other_key_strict(transformers_vivit: Path, tmp_path: Path) -> None:
    path = transformers_vivit
    with pytest.raises(InitError, match="num_hidden_layers=2 needs backbone.depth=2"):
        HFViViTInit(str(path), classifier="replace")(
            SpatioTemporal(
                TubeletTokeniser(D, (T, S, S), (2, P, P)), 101, embed_dim=D, depth=3, num_heads=HEADS, gelu="tanh"
            )
        )
    scenic = save_scenic(tmp_path / "checkpoint_1", scenic_params(1))
    with pytest.raises(InitError, match="set model.net.gelu=tanh"):
        ScenicViViTInit(str(scenic), classifier="replace")(scenic_network(1, num_classes=101, gelu="none"))
    with pytest.raises(InitError, match="init.classifier='new': expected keep .* or replace"):
        HFViViTInit(str(path), classifier="new")


def test_a_wrong_classifier_choice_fails_before_torch(tmp_path: Path) -> None:
    from test_configs import assert_fails_before_torch

    overrides = ["init=hf_vivit", f"init.source={tmp_path}", "init.classifier=new", "model=spatiotemporal"]
    assert_fails_before_torch("train", overrides, "init.classifier='new': expected keep or replace", tmp_path)
