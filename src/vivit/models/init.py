"""Initialising a ViViT variant from a pretrained image ViT (ViViT §3.4), strictly and with a report.

The surgery is a pure function over state dicts (timm key names), ``adapt_image_vit``; ``ImageViTInit``
reads a checkpoint, applies it to a network and checks that nothing but the expected keys stayed fresh.

What each target key gets:

- ``tokeniser.proj``: the image patch kernel. A tubelet kernel (D, C, pt, ph, pw) is inflated:
  ``central_frame`` puts it at slice pt // 2 and zeros elsewhere (Eq. 9), ``average`` puts kernel / pt
  on every slice (Eq. 8), ``random`` keeps the network's own initialisation. The bias is copied.
- ``pos_embed``: the image grid, resized on the 2-D grid when the patch grid differs (as Scenic does:
  bilinear with the corners aligned, ``resize_grid``; the released-ViViT loaders never resize), then tiled over
  the t token frames, time-major, with the CLS entry kept once in front (Models 1, 3, 4). Model 2's
  spatial encoder takes the grid untiled: one positional embedding shared by all frames.
- ``cls_token``: the image CLS token, where the variant has one (Model 1 and Model 2's spatial encoder).
- ``blocks.*``, ``norm``: copied; Model 3's ``temporal_attn`` is ``zero`` (the block starts as the image
  block, the paper) or a ``copy`` of the spatial attention (the official code's default).
- Always fresh: the classifier ``head``; Model 2's temporal encoder (``temporal.*``); Model 3's
  ``temporal_norm``.

Sources (``read_state_dict``): timm state dicts, transformers ViT checkpoints (converted to timm names),
Google's ViT .npz (through timm's loader), ``timm:<name>`` and ``hf:<repo>``. ``HFViViTInit`` loads a
released transformers ViViT (google/vivit-b-16x2-kinetics400 format) into Model 1, classifier included;
``ScenicViViTInit`` loads a released Scenic (Flax) ViViT into Model 1 or Model 2, classifier included.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from vivit.models.tokenisers import TubeletTokeniser
from vivit.models.vivit import FactorisedEncoder, FactorisedSelfAttention, SpatioTemporal, VideoTransformer

__all__ = [
    "HFViViTInit",
    "ImageViTInit",
    "InitError",
    "InitReport",
    "ScenicViViTInit",
    "adapt_hf_vivit",
    "adapt_image_vit",
    "adapt_scenic_vivit",
    "read_scenic_params",
    "read_state_dict",
]

log = logging.getLogger(__name__)

TubeletInit = Literal["central_frame", "average", "random"]
TemporalAttnInit = Literal["zero", "copy"]
IGNORED_SOURCE_PREFIXES = ("head.", "head_drop.", "pre_logits.", "fc_norm.")  # the image classifier


class InitError(ValueError):
    """A checkpoint does not fit the network; the message names the keys."""


@dataclass
class InitReport:
    """What initialisation did to every parameter of the network."""

    source: str
    copied: list[str] = field(default_factory=list)
    transformed: dict[str, str] = field(default_factory=dict)  # target key -> how
    fresh: list[str] = field(default_factory=list)  # kept the network's own initialisation
    unused: list[str] = field(default_factory=list)  # source keys with no counterpart (e.g. the image head)
    # The pixel normalisation the weights expect, (x/255 - mean)/std, when the source states it.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __str__(self) -> str:
        lines = [f"initialised from {self.source}: {len(self.copied)} copied, {len(self.transformed)} transformed, "
                 f"{len(self.fresh)} fresh, {len(self.unused)} source keys unused"]  # fmt: skip
        lines += [f"  transformed {k}: {how}" for k, how in self.transformed.items()]
        lines += [f"  fresh {k}" for k in self.fresh]
        lines += [f"  unused {k}" for k in self.unused]
        if self.mean is not None:
            lines.append(f"  input normalisation: mean {self.mean}, std {self.std}")
        return "\n".join(lines)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))


def expected_fresh(net: VideoTransformer, tubelet: TubeletInit = "central_frame") -> set[str]:
    """The target keys that no image ViT provides, for this variant and tubelet option."""
    keys = set(net.state_dict())
    fresh = {k for k in keys if k.startswith(("head.", "temporal.")) or ".temporal_norm." in k}
    if tubelet == "random" and isinstance(net.tokeniser, TubeletTokeniser):
        fresh |= {"tokeniser.proj.weight", "tokeniser.proj.bias"}
    return fresh


def adapt_image_vit(
    image: Mapping[str, Tensor],
    net: VideoTransformer,
    *,
    tubelet: TubeletInit = "central_frame",
    temporal_attn: TemporalAttnInit = "zero",
    source: str = "image ViT",
) -> tuple[dict[str, Tensor], InitReport]:
    """Map a timm-format image ViT state dict onto ``net``'s keys; returns (state dict, report).

    Raises InitError naming the keys when the source lacks a key the network needs, has keys nothing
    consumes, or holds a tensor of the wrong shape.
    """
    target = net.state_dict()
    report = InitReport(source=source)
    state: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> Tensor:
        if key not in image:
            raise InitError(f"{source}: missing key {key!r}, needed by the {type(net).__name__}")
        used.add(key)
        return image[key]

    def put(key: str, value: Tensor, how: str | None = None) -> None:
        if value.shape != target[key].shape:
            raise InitError(
                f"{source}: {key!r} has shape {tuple(value.shape)} after adaptation but the network needs "
                f"{tuple(target[key].shape)}"
            )
        state[key] = value.to(target[key].dtype)
        if how is None:
            report.copied.append(key)
        else:
            report.transformed[key] = how

    # Tokeniser: the patch embedding, inflated to a tubelet kernel.
    kernel, bias = take("patch_embed.proj.weight"), take("patch_embed.proj.bias")  # (D, C, ph, pw)
    if isinstance(net.tokeniser, TubeletTokeniser):
        pt = net.tokeniser.patch_size[0]
        if tubelet == "central_frame":
            inflated = torch.zeros(*kernel.shape[:2], pt, *kernel.shape[2:], dtype=kernel.dtype)
            inflated[:, :, pt // 2] = kernel
            put(
                "tokeniser.proj.weight",
                inflated,
                f"central_frame: image kernel at slice {pt // 2} of {pt}, zeros elsewhere",
            )
            put("tokeniser.proj.bias", bias)
        elif tubelet == "average":
            inflated = kernel.unsqueeze(2).repeat(1, 1, pt, 1, 1) / pt
            put("tokeniser.proj.weight", inflated, f"average: image kernel / {pt} on each of {pt} slices")
            put("tokeniser.proj.bias", bias)
        elif tubelet != "random":
            raise InitError(f"init.tubelet must be central_frame, average or random, got {tubelet!r}")
    else:
        put("tokeniser.proj.weight", kernel)
        put("tokeniser.proj.bias", bias)

    # Positional embedding and CLS token.
    source_cls = "cls_token" in image
    pos = take("pos_embed")  # (1, [1+]h0·w0, D)
    cls_pos, grid = (pos[:, :1], pos[:, 1:]) if source_cls else (None, pos)
    t, h, w = net.tokeniser.grid_size
    grid, resized = resize_grid(grid, (h, w))
    target_cls = "cls_token" in target
    if target_cls:
        if not source_cls:
            raise InitError(
                f"{source}: has no cls_token, but the {type(net).__name__} uses pool='cls'; set model.net.pool=mean"
            )
        put("cls_token", take("cls_token"))
    elif source_cls:
        report.unused.append("cls_token")
        used.add("cls_token")
    shared = isinstance(net, FactorisedEncoder)
    body = grid if shared else grid.repeat(1, t, 1)  # tile: frame i's slice is the image grid
    pos_embed = torch.cat([cls_pos, body], dim=1) if target_cls else body
    how = ("shared by all frames" if shared else f"tiled over {t} frames, time-major") + resized
    if target_cls:
        how += ", CLS entry kept once"
    elif source_cls:
        how += ", CLS entry dropped"
    put("pos_embed", pos_embed, how)

    # Encoder blocks and the final norm: the image keys, one to one.
    for key in target:
        if key.startswith("blocks.") and ".temporal_" not in key:
            put(key, take(key))
    if isinstance(net, FactorisedSelfAttention):
        for key in (k for k in target if ".temporal_attn." in k):
            spatial = key.replace(".temporal_attn.", ".attn.")
            if temporal_attn == "zero":
                put(key, torch.zeros_like(target[key]), "zero: the temporal MSA starts as an identity residual")
            elif temporal_attn == "copy":
                put(key, take(spatial), f"copy of {spatial}")
            else:
                raise InitError(f"init.temporal_attn must be zero or copy, got {temporal_attn!r}")
    if "norm.weight" not in image and "fc_norm.weight" in image:  # a timm GAP ViT normalises after pooling
        for p in ("weight", "bias"):
            put(f"norm.{p}", take(f"fc_norm.{p}"), "from fc_norm (the image ViT normalised after pooling)")
    else:
        put("norm.weight", take("norm.weight"))
        put("norm.bias", take("norm.bias"))

    report.unused += sorted(k for k in image if k not in used and k.startswith(IGNORED_SOURCE_PREFIXES))
    unexpected = sorted(k for k in image if k not in used and not k.startswith(IGNORED_SOURCE_PREFIXES))
    if unexpected:
        raise InitError(
            f"{source}: keys with no place in the {type(net).__name__} (a deeper or different model?): "
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    report.fresh = sorted(k for k in target if k not in state)
    missing = set(report.fresh) - expected_fresh(net, tubelet)
    if missing:
        raise InitError(f"{source}: no value for {sorted(missing)[:10]} (a shallower or different model?)")
    return state, report


def resize_grid(grid: Tensor, size: tuple[int, int]) -> tuple[Tensor, str]:
    """(1, h0·w0, D) -> (1, h·w, D): the official code's 'resize' (Scenic's ``scipy.ndimage.zoom(order=1)``),
    bilinear on the 2-D grid with the corner entries kept, for every image ViT source: the same weights
    must give the same network whichever file format holds them. timm's own ``resample_abs_pos_embed``
    (bicubic, corners not aligned) is not used: on a 14×14 → 16×16 grid of N(0, 0.5²) entries it differs
    from Scenic's by up to 0.4."""
    n, dim = grid.shape[1], grid.shape[2]
    h0 = int(round(n**0.5))
    if h0 * h0 != n:
        raise InitError(f"pos_embed has {n} grid entries, not a square grid")
    if (h0, h0) == tuple(size):
        return grid, ""
    image = grid.reshape(1, h0, h0, dim).permute(0, 3, 1, 2)  # (1, D, h0, w0)
    image = torch.nn.functional.interpolate(image.double(), size=size, mode="bilinear", align_corners=True)
    resized = image.permute(0, 2, 3, 1).reshape(1, size[0] * size[1], dim).to(grid.dtype)
    return resized, f", grid resized {h0}×{h0} → {size[0]}×{size[1]} (bilinear, corners aligned, as Scenic)"


def read_state_dict(source: str | Path) -> dict[str, Tensor]:
    """A timm-format image ViT state dict from:

    - a local .pth/.pt/.bin/.safetensors file with timm or transformers key names,
    - a transformers model directory (model.safetensors or pytorch_model.bin inside),
    - Google's original ViT .npz (read through timm's own npz loader),
    - ``timm:<name>`` or ``hf:<repo id>``, downloaded (network access needed).
    """
    text = str(source)
    if text.startswith("timm:"):
        import timm

        return timm.create_model(text[len("timm:") :], pretrained=True).state_dict()
    if text.startswith("hf:"):
        from huggingface_hub import snapshot_download

        text = snapshot_download(text[len("hf:") :], allow_patterns=["*.json", "*.safetensors", "*.bin"])
    path = Path(text)
    if is_flax_checkpoint(path):
        raise InitError(f"{path} is a Flax checkpoint: a Scenic ViViT loads with init=scenic_vivit")
    if path.is_dir():
        path = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), path)
    if not path.is_file():
        raise FileNotFoundError(f"init.source={str(source)!r} is not a checkpoint file or model directory")
    if path.suffix == ".npz":
        return read_google_npz(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):  # common checkpoint wrappers
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InitError(f"{path}: not a state dict of tensors")
    return transformers_to_timm(state, str(path)) if is_transformers_vit(state) else state


def read_google_npz(path: Path) -> dict[str, Tensor]:
    """Google's ViT .npz (e.g. imagenet21k/ViT-B_16.npz, as the paper used) as a timm state dict.

    The sizes are read off the arrays; timm's own loader then does the conversion.
    """
    import numpy as np
    from timm.models.vision_transformer import VisionTransformer

    with np.load(path) as npz:
        shapes = {k: npz[k].shape for k in npz.files}
    if "embedding/kernel" not in shapes:
        raise InitError(f"{path}: not a ViT .npz (no 'embedding/kernel')")
    ph, pw, chans, dim = shapes["embedding/kernel"]
    depth = len({k.split("/")[1] for k in shapes if k.startswith("Transformer/encoderblock_")})
    heads = shapes["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"][1]
    mlp = shapes["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"][1]
    tokens = shapes["Transformer/posembed_input/pos_embedding"][1] - ("cls" in shapes)
    grid = int(round(tokens**0.5))
    vit = VisionTransformer(
        img_size=grid * ph, patch_size=ph, in_chans=chans, embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=mlp / dim, class_token="cls" in shapes, num_classes=shapes.get("head/kernel", (dim, 0))[1],
    )  # fmt: skip
    vit.load_pretrained(str(path))
    return vit.state_dict()


ZERO_CENTRED = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # x/127.5 - 1: Google ViT and ViViT weights


def source_normalisation(source: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) that a checkpoint's weights expect, where the source says so; else None."""
    text = str(source)
    if text.startswith("timm:"):
        import timm

        cfg = timm.models.get_pretrained_cfg(text[len("timm:") :])  # offline: the registry, not the hub
        return (tuple(cfg.mean), tuple(cfg.std)) if cfg is not None else None
    path = Path(text)
    if path.suffix == ".npz":
        return ZERO_CENTRED
    processor = (path if path.is_dir() else path.parent) / "preprocessor_config.json"
    if processor.is_file():  # transformers' image processor
        config = json.loads(processor.read_text())
        if "image_mean" in config and "image_std" in config:
            return tuple(config["image_mean"]), tuple(config["image_std"])
    return None


class ImageViTInit:
    """``init(net)``: load an image ViT checkpoint into ``net`` strictly; returns the InitReport."""

    def __init__(
        self,
        source: str,
        tubelet: TubeletInit = "central_frame",
        temporal_attn: TemporalAttnInit = "zero",
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        """``mean``/``std``: the input normalisation the weights expect; None reads it from the source
        where the source states it (timm's pretrained config, Google .npz, transformers' processor)."""
        self.source, self.tubelet, self.temporal_attn = source, tubelet, temporal_attn
        if (mean is None) != (std is None):
            raise InitError("give both init.mean and init.std, or neither")
        self.normalisation = (tuple(mean), tuple(std)) if mean is not None else None

    def __call__(self, net: VideoTransformer) -> InitReport:
        image = read_state_dict(self.source)
        state, report = adapt_image_vit(
            image, net, tubelet=self.tubelet, temporal_attn=self.temporal_attn, source=str(self.source)
        )
        missing, unexpected = net.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) == set(report.fresh), (missing, unexpected)  # adapt_image_vit checked
        report.mean, report.std = self.normalisation or source_normalisation(self.source) or (None, None)
        return report


# transformers' ViT / ViViT key names (as released, and as save_pretrained writes them) -> timm's.
HF_LAYER_KEYS = {
    "attention.output.dense": "attn.proj",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
HF_KEYS = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
    "pooler.dense.weight": "pre_logits.fc.weight",
    "pooler.dense.bias": "pre_logits.fc.bias",
}
HF_GELU = {"gelu": "none", "gelu_fast": "tanh", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
# Every transformers VivitConfig field that changes a loaded model's numbers -> (transformers' default, the
# setting here that reproduces it, or None where none does; the network's value in that setting's terms).
# Dropouts and initializer_range do not change a loaded model: a run's own regularisation applies.
HF_VIVIT_CONFIG: dict[str, tuple[object, str | None, Callable[[VideoTransformer], object]]] = {
    "hidden_size": (768, "backbone.embed_dim", lambda net: net.embed_dim),
    "num_hidden_layers": (12, "backbone.depth", lambda net: len(net.blocks)),
    "num_attention_heads": (12, "backbone.num_heads", lambda net: net.blocks[0].attn.num_heads),
    "intermediate_size": (3072, "backbone.mlp_ratio", lambda net: net.blocks[0].mlp.fc1.out_features / net.embed_dim),
    "hidden_act": ("gelu_fast", "model.net.gelu", lambda net: net.blocks[0].mlp.act.approximate),
    "qkv_bias": (True, "+model.net.qkv_bias", lambda net: net.blocks[0].attn.qkv.bias is not None),
    "layer_norm_eps": (1e-6, None, lambda net: net.norm.eps),
    "num_frames": (32, "data.num_frames", lambda net: net.tokeniser.video_size[0]),
    "image_size": (224, "data.crop_size", lambda net: net.tokeniser.video_size[1]),
    "tubelet_size": ([2, 16, 16], "model.net.tokeniser.patch_size", lambda net: list(net.tokeniser.patch_size)),
    "num_channels": (3, "+model.net.tokeniser.in_chans", lambda net: net.tokeniser.in_chans),
    "num_labels": (2, "data.num_classes", lambda net: net.num_classes),
}
HF_VIVIT_AS = {  # config.json's value -> the setting's; None: no setting reproduces it
    "intermediate_size": lambda value, config: value / config["hidden_size"],
    "hidden_act": lambda value, config: HF_GELU.get(value),
}


def hf_vivit_mismatches(config: Mapping, net: VideoTransformer) -> list[str]:
    """The fields of a transformers ViViT config.json (absent ones at transformers' defaults) that the
    network does not reproduce, each naming the setting to change."""
    values = {name: config.get(name, default) for name, (default, _, _) in HF_VIVIT_CONFIG.items()}
    if "id2label" in config:  # transformers writes the class names; num_labels is their count
        values["num_labels"] = len(config["id2label"])
    mismatches = []
    for name, (_, key, ours) in HF_VIVIT_CONFIG.items():
        value, have = values[name], ours(net)
        wanted = HF_VIVIT_AS[name](value, values) if name in HF_VIVIT_AS else value
        if wanted != have:
            how = f"needs {key}={wanted!r}" if key and wanted is not None else "cannot be reproduced here"
            mismatches.append(f"{name}={value!r} {how} (the network has {have!r})")
    return mismatches


def is_transformers_vit(state: Mapping[str, Tensor]) -> bool:
    return any(".encoder.layer." in k or k.startswith("encoder.layer.") for k in state)


def transformers_to_timm(hf: Mapping[str, Tensor], source: str = "checkpoint") -> dict[str, Tensor]:
    """transformers ViT/ViViT keys (``vit.`` / ``vivit.`` prefix optional) -> timm ViT keys; q, k, v fused."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in hf.items():
        name = key.split(".", 1)[1] if key.startswith(("vit.", "vivit.")) else key
        if name in HF_KEYS:
            out[HF_KEYS[name]] = value
            continue
        if not name.startswith("encoder.layer."):
            raise InitError(f"{source}: unexpected key {key!r}")
        index, rest = name[len("encoder.layer.") :].split(".", 1)
        sub, kind = rest.rsplit(".", 1)
        if sub in HF_LAYER_KEYS:
            out[f"blocks.{index}.{HF_LAYER_KEYS[sub]}.{kind}"] = value
        elif sub in ("attention.attention.query", "attention.attention.key", "attention.attention.value"):
            qkv.setdefault((index, kind), {})[sub.rsplit(".", 1)[1]] = value
        else:
            raise InitError(f"{source}: unexpected key {key!r}")
    for (index, kind), parts in qkv.items():
        missing = {"query", "key", "value"} - parts.keys()
        if missing:
            raise InitError(f"{source}: layer {index} lacks attention {sorted(missing)} {kind}")
        out[f"blocks.{index}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def adapt_hf_vivit(
    vivit: Mapping[str, Tensor], net: VideoTransformer, source: str = "ViViT checkpoint", config: Mapping | None = None
) -> tuple[dict[str, Tensor], InitReport]:
    """A transformers ViViT state dict, in timm key names (``transformers_to_timm``) -> Model 1's keys,
    classifier included; every key must match, and every field of its ``config`` (config.json) that
    changes the numbers (``HF_VIVIT_CONFIG``)."""
    if not isinstance(net, SpatioTemporal) or net.pool != "cls":
        raise InitError(
            f"{source}: a transformers ViViT checkpoint is Model 1 with a CLS token: "
            "use model=spatiotemporal with model.net.pool=cls"
        )
    mismatches = hf_vivit_mismatches(config, net) if config is not None else []
    if mismatches:
        raise InitError(f"{source}/config.json does not fit the network: {'; '.join(mismatches)}")
    state = {k.replace("patch_embed.proj", "tokeniser.proj"): v for k, v in vivit.items()}
    target = net.state_dict()
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    if missing or unexpected:
        raise InitError(f"{source}: does not fit the network: missing {missing[:10]}, unexpected {unexpected[:10]}")
    for key, value in state.items():
        if value.shape != target[key].shape:
            raise InitError(
                f"{source}: {key!r} has shape {tuple(value.shape)}, the network needs {tuple(target[key].shape)}"
            )
    qkv = {k: "query, key and value concatenated" for k in state if ".attn.qkv." in k}
    return state, InitReport(source=source, copied=sorted(set(state) - set(qkv)), transformed=qkv)


class HFViViTInit:
    """``init(net)``: load a transformers ViViT checkpoint directory (config.json + weights) into Model 1.

    Every config.json field that changes the numbers (HF_VIVIT_CONFIG: sizes, tubelet, frames, classes,
    activation, qkv bias, LayerNorm eps) must match the network, or loading is refused naming the field and
    the setting to change. ``labels`` holds the class names after loading.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.labels: list[str] = []

    def __call__(self, net: VideoTransformer) -> InitReport:
        root = Path(self.source)
        config_path = root / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"init.source={self.source!r} has no config.json (a transformers ViViT directory)")
        config = json.loads(config_path.read_text())
        state, report = adapt_hf_vivit(read_state_dict(root), net, source=str(root), config=config)
        net.load_state_dict(state, strict=True)
        report.mean, report.std = ZERO_CENTRED  # ViViT's pixels are x/127.5 - 1
        id2label = config.get("id2label") or {}
        self.labels = [id2label.get(str(i), str(i)) for i in range(net.num_classes)]
        return report


# Scenic (Flax) ViViT checkpoints: flax.training.checkpoints files, msgpack with numpy arrays as extension types.
SCENIC_STEP = re.compile(r"checkpoint_(\d+)")  # the file name flax gives step <n>
FLAX_NDARRAY, FLAX_NPSCALAR = 1, 3  # flax.serialization's msgpack extension codes
FLAX_CHUNKED = "__msgpack_chunked_array__"  # flax splits arrays over 1 GiB into chunks


def is_flax_checkpoint(path: Path) -> bool:
    """A ``checkpoint_<step>`` file that starts as a msgpack map (torch files start with a zip or pickle header)."""
    if not (SCENIC_STEP.fullmatch(path.name) and path.is_file()):
        return False
    with path.open("rb") as file:
        head = file.read(1)
    return bool(head) and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))


def flax_array(data: bytes) -> Tensor:
    """One flax-serialised array, the msgpack tuple (shape, dtype name, C-order bytes), as a tensor."""
    import msgpack
    import numpy as np

    shape, dtype, buffer = msgpack.unpackb(data, raw=True)
    dtype = dtype.decode() if isinstance(dtype, bytes) else dtype
    if dtype == "bfloat16":  # not a numpy dtype
        return torch.frombuffer(bytearray(buffer), dtype=torch.bfloat16).reshape(shape)
    return torch.from_numpy(np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape).copy())


def flax_ext(code: int, data: bytes):
    import msgpack

    return flax_array(data) if code in (FLAX_NDARRAY, FLAX_NPSCALAR) else msgpack.ExtType(code, data)


def flatten_flax(tree: Mapping, source: str, prefix: str = "") -> dict[str, Tensor]:
    """A nested flax state dict -> {'Transformer/encoder_norm/scale': tensor, ...}."""
    flat: dict[str, Tensor] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value.get(FLAX_CHUNKED):
            shape = [value["shape"][str(i)] for i in range(len(value["shape"]))]
            value = torch.cat([value["chunks"][str(i)].reshape(-1) for i in range(len(value["chunks"]))]).reshape(shape)
        if isinstance(value, Mapping):
            flat.update(flatten_flax(value, source, key + "/"))
        elif isinstance(value, Tensor):
            flat[key] = value
        else:
            raise InitError(f"{source}: parameter {key!r} is a {type(value).__name__}, not an array")
    return flat


def read_scenic_params(source: str | Path) -> tuple[dict[str, Tensor], Path]:
    """The parameters of a Scenic (Flax) checkpoint, flat with '/'-joined names, and the file read.

    ``source`` is a ``checkpoint_<step>`` file or a directory of them (the latest step is read). The train
    state keeps the parameters at ``optimizer/target`` (Scenic's old flax.optim trainer, which the released
    ViViTs come from) or ``params`` (the newer trainers).
    """
    import msgpack

    path = Path(source)
    if path.is_dir():
        steps = {int(m.group(1)): p for p in path.iterdir() if (m := SCENIC_STEP.fullmatch(p.name)) and p.is_file()}
        if not steps:
            raise FileNotFoundError(
                f"init.source={str(source)!r} holds no checkpoint_<step> file (Flax msgpack; Orbax is not read)"
            )
        path = steps[max(steps)]
    if not path.is_file():
        raise FileNotFoundError(f"init.source={str(source)!r} is not a Flax checkpoint file or a directory of them")
    try:
        state = msgpack.unpackb(path.read_bytes(), ext_hook=flax_ext, raw=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise InitError(f"{path}: not a Flax msgpack checkpoint ({error})") from error
    if not isinstance(state, Mapping):
        raise InitError(f"{path}: not a Flax msgpack checkpoint (a {type(state).__name__}, not a state dict)")
    optimizer = state.get("optimizer")
    if isinstance(optimizer, Mapping) and isinstance(optimizer.get("target"), Mapping):
        params = optimizer["target"]
    elif isinstance(state.get("params"), Mapping):
        params = state["params"]
    else:
        raise InitError(
            f"{path}: no parameters at 'optimizer/target' or 'params' (top-level keys: {sorted(state)[:10]})"
        )
    return flatten_flax(params, str(path)), path


# Scenic's EncoderBlock, whose layers flax names by class: LayerNorm_0, MultiHeadDotProductAttention_0 (query, key,
# value and out DenseGeneral), LayerNorm_1, MlpBlock_0 (Dense_0, Dense_1). Our block key -> Scenic's name.
SCENIC_BLOCK_KEYS = {
    "norm1.weight": "LayerNorm_0/scale",
    "norm1.bias": "LayerNorm_0/bias",
    "attn.qkv.weight": "MultiHeadDotProductAttention_0/{}/kernel",  # {} = query, key, value
    "attn.qkv.bias": "MultiHeadDotProductAttention_0/{}/bias",
    "attn.proj.weight": "MultiHeadDotProductAttention_0/out/kernel",
    "attn.proj.bias": "MultiHeadDotProductAttention_0/out/bias",
    "norm2.weight": "LayerNorm_1/scale",
    "norm2.bias": "LayerNorm_1/bias",
    "mlp.fc1.weight": "MlpBlock_0/Dense_0/kernel",
    "mlp.fc1.bias": "MlpBlock_0/Dense_0/bias",
    "mlp.fc2.weight": "MlpBlock_0/Dense_1/kernel",
    "mlp.fc2.bias": "MlpBlock_0/Dense_1/bias",
}


def scenic_names(net: VideoTransformer) -> dict[str, tuple[str, ...]]:
    """Our key -> the Scenic parameter(s) it is made of: Model 1 (Scenic's ``ViViT``, one ``Transformer``)
    or Model 2 (``SpaceTimeViViT``: ``SpatialTransformer`` shared by all frames, then ``TemporalTransformer``)."""
    if isinstance(net, SpatioTemporal):
        encoders = {"": ("Transformer", "cls")}
    elif isinstance(net, FactorisedEncoder):
        encoders = {"": ("SpatialTransformer", "cls_SpatialTransformer")}
        encoders["temporal."] = ("TemporalTransformer", "cls_TemporalTransformer")
    else:
        raise InitError(
            f"Scenic ViViT checkpoints are Model 1 or Model 2, not a {type(net).__name__}: "
            "use model=spatiotemporal or model=factorised_encoder"
        )
    if not isinstance(net.tokeniser, TubeletTokeniser):
        raise InitError("Scenic's released ViViTs embed tubelets ('3d_conv'): use tokeniser=tubelet")
    names = {
        "tokeniser.proj.weight": ("embedding/kernel",),
        "tokeniser.proj.bias": ("embedding/bias",),
        "head.weight": ("output_projection/kernel",),
        "head.bias": ("output_projection/bias",),
    }
    for key in net.state_dict():
        if key in names:
            continue
        prefix = "temporal." if key.startswith("temporal.") else ""
        encoder, cls = encoders[prefix]
        name = key[len(prefix) :]
        if name == "cls_token":
            names[key] = (cls,)
        elif name == "pos_embed":
            names[key] = (f"{encoder}/posembed_input/pos_embedding",)
        elif name in ("norm.weight", "norm.bias"):
            names[key] = (f"{encoder}/encoder_norm/{'scale' if name == 'norm.weight' else 'bias'}",)
        else:
            _, index, rest = name.split(".", 2)  # blocks.{i}.{rest}
            scenic = f"{encoder}/encoderblock_{index}/{SCENIC_BLOCK_KEYS[rest]}"
            names[key] = tuple(scenic.format(p) for p in ("query", "key", "value")) if "{}" in scenic else (scenic,)
    return names


def scenic_to_torch(key: str, arrays: list[Tensor]) -> Tensor:
    """Scenic's layout of our key ``key`` -> ours."""
    if key.endswith("attn.qkv.weight"):  # query, key, value (D, nh, dh) -> (3·nh·dh, D), rows (three nh dh)
        return torch.cat([a.flatten(1).transpose(0, 1) for a in arrays])
    if key.endswith("attn.qkv.bias"):  # 3 × (nh, dh) -> (3·nh·dh,)
        return torch.cat([a.flatten() for a in arrays])
    (a,) = arrays
    if key.endswith("attn.proj.weight"):  # (nh, dh, D) -> (D, nh·dh)
        return a.flatten(0, 1).transpose(0, 1)
    if key == "tokeniser.proj.weight":  # Conv (pt, ph, pw, C, D) -> Conv3d (D, C, pt, ph, pw)
        return a.permute(4, 3, 0, 1, 2)
    if key.endswith(("fc1.weight", "fc2.weight")) or key == "head.weight":  # Dense (in, out) -> Linear (out, in)
        return a.transpose(0, 1)
    return a  # LayerNorm scale and bias, biases, CLS tokens, positional embeddings


def scenic_fit_hints(params: Mapping[str, Tensor], wanted: set[str]) -> str:
    """What to change in the config when a Scenic checkpoint's keys do not fit the network."""
    hints = []
    for prefix, model in (("Transformer/", "Model 1: use model=spatiotemporal"),
                          ("SpatialTransformer/", "Model 2: use model=factorised_encoder")):  # fmt: skip
        if any(k.startswith(prefix) for k in params) and not any(k.startswith(prefix) for k in wanted):
            hints.append(f"it is {model}")
    if any(k.startswith("pre_logits/") for k in params):
        hints.append("it has a pre-logits layer (Scenic's representation_size), which the models here lack")
    main_cls = {"cls", "cls_SpatialTransformer"}
    if main_cls & params.keys() and not main_cls & wanted:
        hints.append("it has CLS tokens (classifier='token'): set model.net.pool=cls")
    if main_cls & wanted and not main_cls & params.keys():
        hints.append("it has no CLS tokens (classifier='gap'): set model.net.pool=mean")
    for encoder, knob in (("Transformer", "backbone.depth"), ("SpatialTransformer", "backbone.depth"),
                          ("TemporalTransformer", "model.net.temporal_depth")):  # fmt: skip
        theirs, ours = ({k.split("/")[1] for k in keys if k.startswith(f"{encoder}/encoderblock_")}
                        for keys in (params, wanted))  # fmt: skip
        if theirs and (ours or encoder == "TemporalTransformer") and len(theirs) != len(ours):
            hints.append(f"its {encoder} has {len(theirs)} blocks: set {knob}={len(theirs)}")
    return "".join(f"; {h}" for h in hints)


def adapt_scenic_vivit(
    params: Mapping[str, Tensor], net: VideoTransformer, source: str = "Scenic checkpoint"
) -> tuple[dict[str, Tensor], InitReport]:
    """Scenic ViViT parameters (flat '/' names, ``read_scenic_params``) -> Model 1's or Model 2's keys,
    classifier included. Every checkpoint parameter must be used and every network key filled."""
    names = scenic_names(net)
    approximate = {m.approximate for m in net.modules() if isinstance(m, nn.GELU)}
    if approximate != {"tanh"}:
        raise InitError(
            f"{source}: Scenic's MLPs use flax's gelu, the tanh approximation, but the network's GELU has "
            f"approximate={sorted(approximate)}: set model.net.gelu=tanh"
        )
    wanted = {s for group in names.values() for s in group}
    missing, unexpected = sorted(wanted - params.keys()), sorted(params.keys() - wanted)
    if missing or unexpected:
        raise InitError(
            f"{source}: does not fit the {type(net).__name__}{scenic_fit_hints(params, wanted)}: "
            f"missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    kernel = params["output_projection/kernel"]
    if kernel.ndim == 2 and kernel.shape[1] != net.num_classes:
        raise InitError(
            f"{source}: the classifier 'output_projection/kernel' {tuple(kernel.shape)} has {kernel.shape[1]} "
            f"classes, the network {net.num_classes}: set data.num_classes={kernel.shape[1]}"
        )
    target = net.state_dict()
    state: dict[str, Tensor] = {}
    for key, group in names.items():
        if key.endswith("attn.qkv.weight"):  # the head count is not in our fused shapes: check it here
            heads, query = net.get_submodule(key.removesuffix(".qkv.weight")).num_heads, params[group[0]]
            if query.ndim != 3 or query.shape[1] != heads:
                raise InitError(
                    f"{source}: {group[0]!r} has shape {tuple(query.shape)}, (D, heads, head dim), but the "
                    f"network has {heads} heads: set backbone.num_heads"
                )
        try:
            value = scenic_to_torch(key, [params[s] for s in group])
        except (RuntimeError, IndexError):
            value = None
        if value is None or value.shape != target[key].shape:
            shapes = ", ".join(f"{s!r} {tuple(params[s].shape)}" for s in group)
            raise InitError(f"{source}: {shapes} does not fit {key!r} of shape {tuple(target[key].shape)}")
        state[key] = value.to(target[key].dtype)
    qkv = {k: "query, key and value kernels (D, nh, dh) fused" for k in state if ".attn.qkv." in k}
    return state, InitReport(source=source, copied=sorted(set(state) - set(qkv)), transformed=qkv)


class ScenicViViTInit:
    """``init(net)``: load a released Scenic ViViT (Flax checkpoint) into Model 1 or Model 2, classifier included.

    ``source`` is a ``checkpoint_<step>`` file or a directory of them (the latest step). The network must have
    the checkpoint's sizes, its pooling (CLS token or mean), a tubelet tokeniser and the tanh GELU.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, net: VideoTransformer) -> InitReport:
        params, path = read_scenic_params(self.source)
        state, report = adapt_scenic_vivit(params, net, source=str(path))
        net.load_state_dict(state, strict=True)
        report.mean, report.std = ZERO_CENTRED  # Scenic's ViViTs take pixels x/127.5 - 1
        return report
