"""What every init source shares: the report, the error, the pixel normalisation of Google's weights, reading a
state dict of tensors from a file or a transformers model directory, the choice between a released video model's
classifier and a new one (``init.classifier``), and loading what a source adapted."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "CLASSIFIER",
    "REPLACE_HINT",
    "ZERO_CENTRED",
    "ClassifierInit",
    "InitError",
    "InitReport",
    "check_classifier",
    "load",
    "read_tensors",
]

ZERO_CENTRED = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # x/127.5 - 1: Google ViT and ViViT weights
TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what a transformers model directory holds
CLASSIFIER = ("head.weight", "head.bias")  # every variant's classifier, VideoTransformer.head
# A released video model's classifier: keep it (same classes; loaded strictly), or replace it (fine-tuning on other
# classes: the network's own, freshly initialised head of data.num_classes outputs; the checkpoint's is unused).
ClassifierInit = Literal["keep", "replace"]
REPLACE_HINT = "or init.classifier=replace to fine-tune a new classifier of data.num_classes outputs"


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
        counts = f"{len(self.copied)} copied, {len(self.transformed)} transformed, {len(self.fresh)} fresh"
        lines = [f"initialised from {self.source}: {counts}, {len(self.unused)} source keys unused"]
        lines += [f"  transformed {k}: {how}" for k, how in self.transformed.items()]
        lines += [f"  fresh {k}" for k in self.fresh]
        lines += [f"  unused {k}" for k in self.unused]
        if self.mean is not None:
            lines.append(f"  input normalisation: mean {self.mean}, std {self.std}")
        return "\n".join(lines)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))


def check_classifier(classifier: str) -> ClassifierInit:
    """``init.classifier``, checked when the init is built (before the data and the network)."""
    if classifier not in ("keep", "replace"):
        raise InitError(
            f"init.classifier={classifier!r}: expected keep (the checkpoint's classifier, same classes) or "
            "replace (a new classifier of data.num_classes outputs)"
        )
    return classifier


def load(net: nn.Module, state: dict[str, Tensor], report: InitReport) -> None:
    """Loads an adapted ``state`` into ``net``: every key but the report's ``fresh`` ones, which keep the
    network's own initialisation (the adapter checked the keys and shapes)."""
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == set(report.fresh), (missing, unexpected)


def read_tensors(source: str | Path) -> tuple[dict[str, Tensor], Path]:
    """The state dict in a .safetensors or torch file (inside a "state_dict" or "model" wrapper or not), or in a
    transformers model directory (model.safetensors or pytorch_model.bin); and the file read."""
    path = Path(source)
    if path.is_dir():
        path = next((path / name for name in TRANSFORMERS_WEIGHTS if (path / name).is_file()), path)
    if not path.is_file():
        raise FileNotFoundError(f"init.source={str(source)!r} is not a checkpoint file or model directory")
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
    return state, path
