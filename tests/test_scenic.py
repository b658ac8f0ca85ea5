"""Scenic (Flax) ViViT checkpoints: read, mapped strictly, and giving the logits of a reference forward pass.

The checkpoints are random arrays in Scenic's parameter tree, written with msgpack in flax.serialization's
format (no jax or flax needed). The reference forward pass below is written from Scenic's modules (ViViT and
SpaceTimeViViT, Flax semantics) and reads the checkpoint's own tree: it shares nothing with the loader's key map.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

from vivit.models import FactorisedEncoder, FactorisedSelfAttention, SpatioTemporal, TubeletTokeniser
from vivit.models.init import InitError, ScenicViViTInit, read_scenic_params, read_state_dict

D, DEPTH, HEADS, MLP, K = 32, 2, 2, 128, 5
T, S, PT, P = 4, 32, 2, 8  # clip T×S×S, tubelets PT×P×P: t = 2 frames of s = 16 tokens
DH = D // HEADS


# --- Scenic's parameter tree, random ---


def layer_norm(rng: np.random.Generator) -> dict:
    return {"scale": 1 + rng.normal(0, 0.1, D), "bias": rng.normal(0, 0.1, D)}


def dense(rng: np.random.Generator, fan_in: int, fan_out: int) -> dict:
    return {"kernel": rng.normal(0, 0.2, (fan_in, fan_out)), "bias": rng.normal(0, 0.1, fan_out)}


def encoder(rng: np.random.Generator, depth: int, tokens: int) -> dict:
    """Scenic's ViViT ``Encoder``: posembed_input, encoderblock_i (flax's per-class layer names), encoder_norm."""
    tree = {"posembed_input": {"pos_embedding": rng.normal(0, 0.2, (1, tokens, D))}}
    for i in range(depth):
        attention = {
            name: {"kernel": rng.normal(0, 0.2, (D, HEADS, DH)), "bias": rng.normal(0, 0.1, (HEADS, DH))}
            for name in ("query", "key", "value")
        }
        attention["out"] = {"kernel": rng.normal(0, 0.2, (HEADS, DH, D)), "bias": rng.normal(0, 0.1, D)}
        tree[f"encoderblock_{i}"] = {
            "LayerNorm_0": layer_norm(rng),
            "MultiHeadDotProductAttention_0": attention,
            "LayerNorm_1": layer_norm(rng),
            "MlpBlock_0": {"Dense_0": dense(rng, D, MLP), "Dense_1": dense(rng, MLP, D)},
        }
    tree["encoder_norm"] = layer_norm(rng)
    return tree


def scenic_params(model: int, token: bool = True, temporal_depth: int = 1, seed: int = 0) -> dict:
    """Model 1 (``ViViT``, spacetime attention) or Model 2 (``SpaceTimeViViT``); token: classifier='token'."""
    rng = np.random.default_rng(seed)
    t, s = T // PT, (S // P) ** 2
    params = {"embedding": {"kernel": rng.normal(0, 0.2, (PT, P, P, 3, D)), "bias": rng.normal(0, 0.1, D)}}
    if model == 1:
        params["Transformer"] = encoder(rng, DEPTH, token + t * s)
        if token:
            params["cls"] = rng.normal(0, 0.2, (1, 1, D))
    else:
        params["SpatialTransformer"] = encoder(rng, DEPTH, token + s)
        if token:
            params["cls_SpatialTransformer"] = rng.normal(0, 0.2, (1, 1, D))
        if temporal_depth:
            params["TemporalTransformer"] = encoder(rng, temporal_depth, token + t)
            if token:
                params["cls_TemporalTransformer"] = rng.normal(0, 0.2, (1, 1, D))
    params["output_projection"] = dense(rng, D, K)
    return as_float32(params)


def as_float32(tree: dict) -> dict:
    return {k: as_float32(v) if isinstance(v, dict) else np.asarray(v, np.float32) for k, v in tree.items()}


def flax_bytes(state: dict) -> bytes:
    """flax.serialization's msgpack: arrays as extension 1, numpy scalars as extension 3, (shape, dtype, bytes)."""

    def encode(x):
        if isinstance(x, np.ndarray | np.generic):
            code = 1 if isinstance(x, np.ndarray) else 3
            return msgpack.ExtType(code, msgpack.packb((x.shape, x.dtype.name, x.tobytes()), use_bin_type=True))
        raise TypeError(type(x))

    return msgpack.packb(state, default=encode, use_bin_type=True)


def save(path: Path, params: dict, layout: str = "optimizer") -> Path:
    """A Scenic train state: the old trainer's flax.optim ``optimizer/target``, or the newer ``params``."""
    momentum = {"embedding": {"bias": np.zeros(D, np.float32)}}
    step = np.int64(7)
    if layout == "optimizer":
        state = {"optimizer": {"target": params, "state": {"step": step, "param_states": momentum}}}
    else:
        state = {"params": params, "opt_state": momentum}
    state |= {"global_step": step, "rng": np.arange(2, dtype=np.uint32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flax_bytes(state))
    return path


# --- The reference: Scenic's forward pass with Flax semantics, in numpy (float64) ---


def ln(x: np.ndarray, p: dict) -> np.ndarray:  # nn.LayerNorm: epsilon 1e-6
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def gelu(x: np.ndarray) -> np.ndarray:  # flax's nn.gelu is jax.nn.gelu, approximate=True by default
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def self_attention(x: np.ndarray, p: dict) -> np.ndarray:  # nn.MultiHeadDotProductAttention
    q, k, v = (np.einsum("bnd,dhe->bnhe", x, p[n]["kernel"]) + p[n]["bias"] for n in ("query", "key", "value"))
    logits = np.einsum("bqhe,bkhe->bhqk", q / np.sqrt(q.shape[-1]), k)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = np.einsum("bhqk,bkhe->bqhe", weights, v)
    return np.einsum("bqhe,hed->bqd", y, p["out"]["kernel"]) + p["out"]["bias"]


def mlp(x: np.ndarray, p: dict) -> np.ndarray:  # MlpBlock: Dense_0, gelu, Dense_1
    hidden = gelu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def encode(x: np.ndarray, p: dict) -> np.ndarray:  # Encoder: + pos, pre-LN EncoderBlocks, encoder_norm
    x = x + p["posembed_input"]["pos_embedding"]
    for i in range(sum(k.startswith("encoderblock_") for k in p)):
        block = p[f"encoderblock_{i}"]
        x = x + self_attention(ln(x, block["LayerNorm_0"]), block["MultiHeadDotProductAttention_0"])
        x = x + mlp(ln(x, block["LayerNorm_1"]), block["MlpBlock_0"])
    return ln(x, p["encoder_norm"])


def tubelets(video: np.ndarray, p: dict) -> np.ndarray:
    """nn.Conv, VALID, kernel = strides = (pt, ph, pw): (B, T, H, W, C) -> (B, t, h, w, D)."""
    B, T_, H, W, C = video.shape
    pt, ph, pw = p["kernel"].shape[:3]
    x = video.reshape(B, T_ // pt, pt, H // ph, ph, W // pw, pw, C)
    return np.einsum("bxiyjzkc,ijkcd->bxyzd", x, p["kernel"]) + p["bias"]


def with_cls(x: np.ndarray, cls: np.ndarray) -> np.ndarray:
    return np.concatenate([np.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])), x], axis=1)


def classify(x: np.ndarray, token: bool) -> np.ndarray:  # classifier 'token' or 'gap'
    return x[:, 0] if token else x.mean(axis=1)


def scenic_forward(video: np.ndarray, p: dict) -> np.ndarray:
    """Logits of Scenic's ViViT (Model 1) or SpaceTimeViViT (Model 2); video (B, T, H, W, C)."""
    x = tubelets(video, p["embedding"])
    B, t = x.shape[:2]
    if "Transformer" in p:  # Model 1: all t·h·w tokens, time-major, one CLS in front
        token = "cls" in p
        x = x.reshape(B, -1, D)
        x = classify(encode(with_cls(x, p["cls"]) if token else x, p["Transformer"]), token)
    else:  # Model 2: the spatial encoder on each frame (its own CLS per frame), then the temporal encoder
        token = "cls_SpatialTransformer" in p
        x = x.reshape(B, t, -1, D)
        frames = []
        for i in range(t):
            xi = with_cls(x[:, i], p["cls_SpatialTransformer"]) if token else x[:, i]
            frames.append(classify(encode(xi, p["SpatialTransformer"]), token))
        x = np.stack(frames, axis=1)  # (B, t, D)
        if "TemporalTransformer" in p:
            x = classify(
                encode(with_cls(x, p["cls_TemporalTransformer"]) if token else x, p["TemporalTransformer"]), token
            )
        else:  # spatial_only_baseline: the average over time
            x = x.mean(axis=1)
    return x @ p["output_projection"]["kernel"] + p["output_projection"]["bias"]


# --- Tests ---


def network(model: int, token: bool = True, temporal_depth: int = 1, **kwargs):
    tokeniser = TubeletTokeniser(embed_dim=D, video_size=(T, S, S), patch_size=(PT, P, P))
    sizes = dict(num_classes=K, embed_dim=D, depth=DEPTH, num_heads=HEADS, mlp_ratio=MLP / D)
    kwargs = sizes | dict(pool="cls" if token else "mean", gelu="tanh") | kwargs
    if model == 1:
        return SpatioTemporal(tokeniser, **kwargs).eval()
    return FactorisedEncoder(tokeniser, temporal_depth=temporal_depth, **kwargs).eval()


@pytest.mark.parametrize(
    ("model", "token", "temporal_depth", "layout"),
    [
        (1, True, 0, "optimizer"),
        (1, False, 0, "params"),
        (2, True, 1, "params"),
        (2, False, 2, "optimizer"),
        (2, True, 0, "optimizer"),  # spatial_only_baseline: the average-pool baseline
    ],
)
def test_logits_match_scenic_forward(model: int, token: bool, temporal_depth: int, layout: str, tmp_path: Path) -> None:
    params = scenic_params(model, token, temporal_depth)
    path = save(tmp_path / "checkpoint_7", params, layout)
    net = network(model, token, temporal_depth)
    report = ScenicViViTInit(str(path))(net)
    video = np.random.default_rng(1).normal(size=(2, T, S, S, 3))  # (B, T, H, W, C), as Scenic takes it
    with torch.no_grad():
        logits = net(torch.from_numpy(video).float().permute(0, 4, 1, 2, 3))  # (B, C, T, H, W)
    expected = scenic_forward(video, params)
    assert logits.shape == (2, K)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert set(report.copied) | set(report.transformed) == set(net.state_dict())
    assert (report.mean, report.std) == ((0.5,) * 3, (0.5,) * 3)  # [-1, 1]
    assert report.source == str(path)


def test_a_directory_gives_its_latest_step(tmp_path: Path) -> None:
    for step in (5, 40, 7):
        save(tmp_path / f"checkpoint_{step}", scenic_params(1, seed=step))
    (tmp_path / "checkpoint_99.orbax-checkpoint-tmp").mkdir()  # not a checkpoint_<step> file
    params, path = read_scenic_params(tmp_path)
    assert path.name == "checkpoint_40"
    assert torch.equal(params["cls"], torch.from_numpy(scenic_params(1, seed=40)["cls"]))
    with pytest.raises(FileNotFoundError, match="no checkpoint_<step>"):
        read_scenic_params(tmp_path / "checkpoint_99.orbax-checkpoint-tmp")


def test_reader_handles_chunked_and_bfloat16_arrays(tmp_path: Path) -> None:
    big = np.arange(12, dtype=np.float32).reshape(3, 4)
    chunks = {"0": big.ravel()[:5], "1": big.ravel()[5:]}
    chunked = {"__msgpack_chunked_array__": True, "shape": {"0": 3, "1": 4}, "chunks": chunks}
    bf16 = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    ext = msgpack.ExtType(
        1, msgpack.packb(([3], "bfloat16", bf16.view(torch.int16).numpy().tobytes()), use_bin_type=True)
    )
    packed = msgpack.packb(
        {"params": {"big": chunked, "half": ext}},
        default=lambda x: msgpack.ExtType(1, msgpack.packb((x.shape, x.dtype.name, x.tobytes()), use_bin_type=True)),
        use_bin_type=True,
    )
    (tmp_path / "checkpoint_1").write_bytes(packed)
    params, _ = read_scenic_params(tmp_path / "checkpoint_1")
    assert torch.equal(params["big"], torch.from_numpy(big))
    assert torch.equal(params["half"], bf16)


def test_not_a_scenic_train_state(tmp_path: Path) -> None:
    (tmp_path / "checkpoint_1").write_bytes(flax_bytes({"state": {"w": np.zeros(2, np.float32)}}))
    with pytest.raises(InitError, match="no parameters at 'optimizer/target' or 'params'.*'state'"):
        read_scenic_params(tmp_path / "checkpoint_1")
    torch.save({"w": torch.zeros(2)}, tmp_path / "checkpoint_2")
    with pytest.raises(InitError, match="not a Flax msgpack checkpoint"):
        read_scenic_params(tmp_path / "checkpoint_2")
    with pytest.raises(FileNotFoundError, match="init.source"):
        read_scenic_params(tmp_path / "checkpoint_3")
    with pytest.raises(InitError, match="init=scenic_vivit"):  # the image-ViT reader points to the right init
        read_state_dict(tmp_path / "checkpoint_1")
    assert torch.equal(read_state_dict(tmp_path / "checkpoint_2")["w"], torch.zeros(2))  # a torch file stays one


def subtree(tree: dict, key: str) -> tuple[dict, str]:
    *parents, leaf = key.split("/")
    for name in parents:
        tree = tree.setdefault(name, {})
    return tree, leaf


def drop(key: str):
    return lambda tree: (lambda t, leaf: t.pop(leaf))(*subtree(tree, key))


def put(key: str, value: np.ndarray):
    return lambda tree: (lambda t, leaf: t.__setitem__(leaf, value.astype(np.float32)))(*subtree(tree, key))


BLOCK_1 = "Transformer/encoderblock_1"


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (drop(f"{BLOCK_1}/MlpBlock_0/Dense_0/kernel"), rf"missing \['{BLOCK_1}/MlpBlock_0/Dense_0/kernel'\]"),
        (drop(f"{BLOCK_1}/MultiHeadDotProductAttention_0/value/bias"), "value/bias"),
        (put("Transformer/encoderblock_2/LayerNorm_0/scale", np.ones(D)), r"unexpected \['Transformer/encoderblock_2/"),
        (put("pre_logits/kernel", np.ones((D, D))), "pre-logits layer.*unexpected.*'pre_logits/kernel'"),
        (
            put("Transformer/encoder_norm/scale", np.ones(D + 1)),
            r"'Transformer/encoder_norm/scale' \(33,\) does not fit",
        ),
        (put("embedding/kernel", np.ones((P, P, 3, D))), r"'embedding/kernel' \(8, 8, 3, 32\) does not fit"),
        (
            put(f"{BLOCK_1}/MultiHeadDotProductAttention_0/key/kernel", np.ones((D, HEADS, DH + 1))),
            f"'{BLOCK_1}/MultiHeadDotProductAttention_0/key/kernel' \\(32, 2, 17\\)",
        ),
    ],
)
def test_mismatched_checkpoint_raises_naming_the_key(corrupt, message: str, tmp_path: Path) -> None:
    params = scenic_params(1)
    corrupt(params)
    path = save(tmp_path / "checkpoint_1", params)
    with pytest.raises(InitError, match=message):
        ScenicViViTInit(str(path))(network(1))


def model_3() -> FactorisedSelfAttention:
    tokeniser = TubeletTokeniser(embed_dim=D, video_size=(T, S, S), patch_size=(PT, P, P))
    return FactorisedSelfAttention(tokeniser, K, embed_dim=D, depth=DEPTH, num_heads=HEADS, pool="mean", gelu="tanh")


@pytest.mark.parametrize(
    ("net", "message"),
    [
        (lambda: network(1, gelu="none"), r"tanh approximation.*set model.net.gelu=tanh"),
        (lambda: network(1, num_heads=4), r"query/kernel' has shape \(32, 2, 16\).*4 heads"),
        (lambda: network(1, num_classes=7), "has 5 classes, the network 7: set data.num_classes=5"),
        (lambda: network(1, token=False), "has CLS tokens.*set model.net.pool=cls"),
        (lambda: network(1, depth=3), "its Transformer has 2 blocks: set backbone.depth=2"),
        (lambda: network(2), "it is Model 1: use model=spatiotemporal"),
        (model_3, "Model 1 or Model 2, not a FactorisedSelfAttention"),
    ],
)
def test_network_that_does_not_fit_the_checkpoint_raises(net, message: str, tmp_path: Path) -> None:
    path = save(tmp_path / "checkpoint_1", scenic_params(1))
    with pytest.raises(InitError, match=message):
        ScenicViViTInit(str(path))(net())


def test_model_2_temporal_depth_mismatch_names_the_knob(tmp_path: Path) -> None:
    path = save(tmp_path / "checkpoint_1", scenic_params(2, temporal_depth=2))
    with pytest.raises(InitError, match="its TemporalTransformer has 2 blocks: set model.net.temporal_depth=2"):
        ScenicViViTInit(str(path))(network(2, temporal_depth=0))
