"""Scenic (Flax) checkpoints: ``ScenicViViTInit`` loads a released Scenic ViViT into Model 1 or Model 2, its
classifier too (``classifier="keep"``) or a new one for other classes (``"replace"``), from
flax.training.checkpoints files (msgpack) without flax or jax."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from vivit.models.init import common
from vivit.models.init.common import ZERO_CENTRED, InitError, InitReport
from vivit.models.tokenisers import TubeletTokeniser
from vivit.models.vivit import FactorisedEncoder, SpatioTemporal, VideoTransformer

__all__ = ["ScenicViViTInit", "adapt_scenic_vivit", "is_flax_checkpoint", "read_scenic_params"]


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
    model_1, model_2 = "Model 1: use model=spatiotemporal", "Model 2: use model=factorised_encoder"
    for prefix, model in (("Transformer/", model_1), ("SpatialTransformer/", model_2)):
        if any(k.startswith(prefix) for k in params) and not any(k.startswith(prefix) for k in wanted):
            hints.append(f"it is {model}")
    if any(k.startswith("pre_logits/") for k in params):
        hints.append("it has a pre-logits layer (Scenic's representation_size), which the models here lack")
    main_cls = {"cls", "cls_SpatialTransformer"}
    if main_cls & params.keys() and not main_cls & wanted:
        hints.append("it has CLS tokens (classifier='token'): set model.net.pool=cls")
    if main_cls & wanted and not main_cls & params.keys():
        hints.append("it has no CLS tokens (classifier='gap'): set model.net.pool=mean")
    knobs = {"Transformer": "backbone.depth", "SpatialTransformer": "backbone.depth"}
    for encoder, knob in {**knobs, "TemporalTransformer": "model.net.temporal_depth"}.items():
        blocks = f"{encoder}/encoderblock_"
        theirs, ours = ({k.split("/")[1] for k in keys if k.startswith(blocks)} for keys in (params, wanted))
        if theirs and (ours or encoder == "TemporalTransformer") and len(theirs) != len(ours):
            hints.append(f"its {encoder} has {len(theirs)} blocks: set {knob}={len(theirs)}")
    return "".join(f"; {h}" for h in hints)


def adapt_scenic_vivit(
    params: Mapping[str, Tensor],
    net: VideoTransformer,
    source: str = "Scenic checkpoint",
    classifier: common.ClassifierInit = "keep",
) -> tuple[dict[str, Tensor], InitReport]:
    """Scenic ViViT parameters (flat '/' names, ``read_scenic_params``) -> Model 1's or Model 2's keys. Every
    checkpoint parameter must be used and every network key filled, except, with ``classifier="replace"``, the
    classifier: the network's own stays (``report.fresh``) and the checkpoint's ``output_projection`` is unused."""
    names = scenic_names(net)
    fresh = list(common.CLASSIFIER) if classifier == "replace" else []
    unused = sorted(s for key in fresh for s in names.pop(key) if s in params)  # the checkpoint's classifier
    approximate = {m.approximate for m in net.modules() if isinstance(m, nn.GELU)}
    if approximate != {"tanh"}:
        raise InitError(
            f"{source}: Scenic's MLPs use flax's gelu, the tanh approximation, but the network's GELU has "
            f"approximate={sorted(approximate)}: set model.net.gelu=tanh"
        )
    wanted = {s for group in names.values() for s in group}
    missing, unexpected = sorted(wanted - params.keys()), sorted(params.keys() - wanted - set(unused))
    if missing or unexpected:
        raise InitError(
            f"{source}: does not fit the {type(net).__name__}{scenic_fit_hints(params, wanted)}: "
            f"missing {missing[:10]}, unexpected {unexpected[:10]}"
        )
    kernel = params["output_projection/kernel"] if classifier == "keep" else None
    if kernel is not None and kernel.ndim == 2 and kernel.shape[1] != net.num_classes:
        raise InitError(
            f"{source}: the classifier 'output_projection/kernel' {tuple(kernel.shape)} has {kernel.shape[1]} "
            f"classes, the network {net.num_classes}: set data.num_classes={kernel.shape[1]}, {common.REPLACE_HINT}"
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
    copied = sorted(set(state) - set(qkv))
    return state, InitReport(source=source, copied=copied, transformed=qkv, fresh=fresh, unused=unused)


class ScenicViViTInit:
    """``init(net)``: load a released Scenic ViViT (Flax checkpoint) into Model 1 or Model 2.

    ``source`` is a ``checkpoint_<step>`` file or a directory of them (the latest step). The network must have
    the checkpoint's sizes, its pooling (CLS token or mean), a tubelet tokeniser and the tanh GELU; and its class
    count, unless ``classifier="replace"`` keeps the network's new classifier instead of the checkpoint's.
    """

    normalisation = ZERO_CENTRED  # Scenic's ViViTs take pixels x/127.5 - 1

    def __init__(self, source: str, classifier: common.ClassifierInit = "keep") -> None:
        self.source, self.classifier = source, common.check_classifier(classifier)

    def __call__(self, net: VideoTransformer) -> InitReport:
        params, path = read_scenic_params(self.source)
        state, report = adapt_scenic_vivit(params, net, source=str(path), classifier=self.classifier)
        common.load(net, state, report)
        report.mean, report.std = self.normalisation
        return report
