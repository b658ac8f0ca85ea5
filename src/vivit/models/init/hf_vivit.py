"""transformers checkpoints: ViT and ViViT key names (shared by both) to timm's, and ``HFViViTInit``, which loads a
released transformers ViViT (google/vivit-b-16x2-kinetics400 format) into Model 1, with every config.json field
that changes the numbers (``HF_VIVIT_CONFIG``) checked against the network; its classifier too
(``classifier="keep"``), or a new one for other classes (``"replace"``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from vivit.models.init import common
from vivit.models.init.common import ZERO_CENTRED, InitError, InitReport, read_tensors
from vivit.models.vivit import SpatioTemporal, VideoTransformer

__all__ = ["HF_VIVIT_CONFIG", "HFViViTInit", "adapt_hf_vivit", "is_transformers_vit", "transformers_to_timm"]


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


def hf_vivit_mismatches(
    config: Mapping, net: VideoTransformer, classifier: common.ClassifierInit = "keep"
) -> list[str]:
    """The fields of a transformers ViViT config.json (absent ones at transformers' defaults) that the
    network does not reproduce, each naming the setting to change; the class count only with the classifier kept."""
    values = {name: config.get(name, default) for name, (default, _, _) in HF_VIVIT_CONFIG.items()}
    if "id2label" in config:  # transformers writes the class names; num_labels is their count
        values["num_labels"] = len(config["id2label"])
    mismatches = []
    for name, (_, key, ours) in HF_VIVIT_CONFIG.items():
        if name == "num_labels" and classifier == "replace":
            continue
        value, have = values[name], ours(net)
        wanted = HF_VIVIT_AS[name](value, values) if name in HF_VIVIT_AS else value
        if wanted != have:
            how = f"needs {key}={wanted!r}" if key and wanted is not None else "cannot be reproduced here"
            how += f", {common.REPLACE_HINT}" if name == "num_labels" else ""
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
    vivit: Mapping[str, Tensor],
    net: VideoTransformer,
    source: str = "ViViT checkpoint",
    config: Mapping | None = None,
    classifier: common.ClassifierInit = "keep",
) -> tuple[dict[str, Tensor], InitReport]:
    """A transformers ViViT state dict, in timm key names (``transformers_to_timm``) -> Model 1's keys; every key
    must match, and every field of its ``config`` (config.json) that changes the numbers (``HF_VIVIT_CONFIG``).
    ``classifier="replace"`` leaves the network's own classifier (``report.fresh``) and the checkpoint's unused."""
    if not isinstance(net, SpatioTemporal) or net.pool != "cls":
        raise InitError(
            f"{source}: a transformers ViViT checkpoint is Model 1 with a CLS token: "
            "use model=spatiotemporal with model.net.pool=cls"
        )
    mismatches = hf_vivit_mismatches(config, net, classifier) if config is not None else []
    if mismatches:
        raise InitError(f"{source}/config.json does not fit the network: {'; '.join(mismatches)}")
    state = {k.replace("patch_embed.proj", "tokeniser.proj"): v for k, v in vivit.items()}
    fresh = list(common.CLASSIFIER) if classifier == "replace" else []
    hf_names = {ours: theirs for theirs, ours in HF_KEYS.items()}
    unused = [hf_names[k] for k in fresh if state.pop(k, None) is not None]  # as named in the checkpoint
    target = net.state_dict()
    missing, unexpected = sorted(set(target) - set(state) - set(fresh)), sorted(set(state) - set(target))
    if missing or unexpected:
        raise InitError(f"{source}: does not fit the network: missing {missing[:10]}, unexpected {unexpected[:10]}")
    for key, value in state.items():
        if value.shape != target[key].shape:
            hint = f": set data.num_classes={len(value)}, {common.REPLACE_HINT}" if key in common.CLASSIFIER else ""
            raise InitError(
                f"{source}: {key!r} has shape {tuple(value.shape)}, the network needs {tuple(target[key].shape)}{hint}"
            )
    qkv = {k: "query, key and value concatenated" for k in state if ".attn.qkv." in k}
    copied = sorted(set(state) - set(qkv))
    return state, InitReport(source=source, copied=copied, transformed=qkv, fresh=fresh, unused=unused)


class HFViViTInit:
    """``init(net)``: load a transformers ViViT checkpoint directory (config.json + weights) into Model 1.

    Every config.json field that changes the numbers (HF_VIVIT_CONFIG: sizes, tubelet, frames, classes,
    activation, qkv bias, LayerNorm eps) must match the network, or loading is refused naming the field and
    the setting to change. ``classifier="replace"`` keeps the network's new classifier instead of the
    checkpoint's, whatever its class count. ``labels`` holds the class names after loading (with a replaced
    classifier, the class indices).
    """

    normalisation = ZERO_CENTRED  # ViViT's pixels are x/127.5 - 1

    def __init__(self, source: str, classifier: common.ClassifierInit = "keep") -> None:
        self.source, self.classifier = source, common.check_classifier(classifier)
        self.labels: list[str] = []

    def __call__(self, net: VideoTransformer) -> InitReport:
        root = Path(self.source)
        config_path = root / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"init.source={self.source!r} has no config.json (a transformers ViViT directory)")
        config = json.loads(config_path.read_text())
        state, path = read_tensors(root)
        vivit = transformers_to_timm(state, str(path))
        state, report = adapt_hf_vivit(vivit, net, source=str(root), config=config, classifier=self.classifier)
        common.load(net, state, report)
        report.mean, report.std = self.normalisation
        id2label = (config.get("id2label") if self.classifier == "keep" else None) or {}
        self.labels = [id2label.get(str(i), str(i)) for i in range(net.num_classes)]
        return report
