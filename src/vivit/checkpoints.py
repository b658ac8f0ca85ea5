"""A checkpoint's run config: stored in every checkpoint that src/train.py writes, so that a checkpoint alone can be
evaluated, exported or used for predictions; read back with the command's ``data.*`` and ``model.*`` overrides
applied one way for every entry point (:func:`with_command_overrides`)."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from vivit.config import hydra_overrides
from vivit.training.checkpoint_io import read_checkpoint

CONFIG_KEY = "vivit_config"  # where a checkpoint keeps the resolved run config


class SaveConfigInCheckpoint(Callback):
    """Stores the resolved run config in every checkpoint. Added in code (vivit.trainer), not in conf/callbacks:
    its argument is the whole run config, resolved, which a config file cannot give."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


def load_checkpoint(path: str | Path) -> tuple[dict, DictConfig]:
    """A checkpoint written by src/train.py (on CPU) and the run config stored inside it."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    if CONFIG_KEY not in checkpoint:
        raise ValueError(f"{path} holds no run config ({CONFIG_KEY!r}); it was not written by src/train.py")
    return checkpoint, OmegaConf.create(checkpoint[CONFIG_KEY])


def load_model(path: str | Path, cfg: DictConfig | None = None) -> tuple[L.LightningModule, DictConfig]:
    """A checkpoint's trained model, rebuilt from its stored run config: eager (``model.compile`` is ignored), on
    CPU, in eval mode; and the run config. With ``cfg`` (the command's config), its overrides apply first
    (:func:`with_command_overrides`: ``model.view_average=softmax``, ``data.test_clips=4``)."""
    checkpoint, run_cfg = load_checkpoint(path)
    if cfg is not None:
        run_cfg = with_command_overrides(run_cfg, cfg)
    model = instantiate(OmegaConf.merge(run_cfg.model, {"compile": False}))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), run_cfg


def stored_normalisation(path: str | Path) -> dict[str, list[float]] | None:
    """The input normalisation (``mean``, ``std``) that a checkpoint's run was trained with, or None for a
    checkpoint without a run config."""
    stored = read_checkpoint(path).get(CONFIG_KEY)
    return None if stored is None else {"mean": stored["data"]["mean"], "std": stored["data"]["std"]}


def with_command_overrides(
    run_cfg: DictConfig, cfg: DictConfig, nodes: tuple[str, ...] = ("data", "model")
) -> DictConfig:
    """``run_cfg`` (a checkpoint's run config) with what this command sets under ``nodes``: under Hydra, its
    command-line keys (``data.test_clips=4``, ``data.root=/elsewhere``, ``data.target_fps=null``,
    ``model.view_average=softmax``) with their composed values; outside Hydra (a notebook's ``compose``), the
    values of ``cfg``'s override nodes that are not null (src/eval.py's config holds every data key, null: the
    checkpoint's value stays); a node with a ``_target_`` is a whole config (src/predict.py composes the train
    config's), not overrides. A key that the checkpoint's config lacks is added when its ``_target_`` takes it (a
    checkpoint written before the key existed), else refused by name (:func:`check_accepted`)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        keys = hydra_overrides()
        chosen = {key: OmegaConf.select(cfg, key) for key in keys if "." in key and key.split(".")[0] in nodes}
    else:
        overridden = [node for node in nodes if "_target_" not in (cfg.get(node) or {})]
        chosen = {
            f"{node}.{key}": value
            for node in overridden
            for key, value in (cfg.get(node) or {}).items()
            if value is not None
        }
    run_cfg = copy.deepcopy(run_cfg)
    for key, value in chosen.items():
        node, _, name = key.partition(".")
        check_accepted(run_cfg[node], {name.split(".")[0]: value}, node)
        OmegaConf.update(run_cfg, key, value, merge=True, force_add=True)
    return run_cfg


def check_accepted(node: DictConfig, overrides: dict[str, Any], name: str) -> None:
    """Fails naming the first of ``overrides`` that neither ``node`` (a checkpoint's config) has nor its
    ``_target_`` takes; a key that the target takes is added (a checkpoint written before the key existed)."""
    new = [key for key in overrides if key not in node]
    if not new or "_target_" not in node:
        return
    parameters = inspect.signature(get_class(node._target_)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    if refused := [key for key in new if key not in {p.name for p in parameters}]:
        raise ValueError(
            f"{name}.{refused[0]}: the checkpoint's {name} config has no such key and {node._target_} takes "
            f"no such argument"
        )
