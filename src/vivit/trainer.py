"""The Lightning Trainer of a run, with the callbacks and loggers of its config, and how fitting stops.

Added in code rather than in conf/, each for a reason a config file cannot meet:
:class:`~vivit.checkpoints.SaveConfigInCheckpoint` (its argument is the whole resolved run config),
:class:`~vivit.training.checkpoint_io.AtomicCheckpointIO` (``trainer.plugins`` is a list, which an option such as
``cluster=slurm`` replaces rather than extends), W&B's offline mode, group and tags (they depend on the
machine's login and on the sweep), and ``enable_model_summary`` (off when the callbacks print a summary).
Ctrl-C while fitting does what SIGTERM does (:func:`fit`).
"""

from __future__ import annotations

import logging
import netrc
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, ModelSummary
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from vivit.checkpoints import SaveConfigInCheckpoint
from vivit.multirun import sweep_name
from vivit.training.checkpoint_io import AtomicCheckpointIO

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig, run_config: dict | None = None, **kwargs: Any) -> L.Trainer:
    """The trainer of ``cfg.trainer`` with the callbacks of ``cfg.callbacks`` and the loggers of ``cfg.logger``;
    ``run_config`` (a run that fits): stored in every checkpoint and logged as the loggers' hyperparameters."""
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    if run_config is not None:
        callbacks.append(SaveConfigInCheckpoint(run_config))
    plugins = [instantiate(node) for node in cfg.trainer.get("plugins") or []]
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    # callbacks.model_summary prints the summary: Lightning adds no second one (nor warns that it would)
    summary = cfg.trainer.get("enable_model_summary", True) and not any(isinstance(c, ModelSummary) for c in callbacks)
    loggers = instantiate_loggers(cfg.get("logger"), axes=run_axes(cfg))
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=plugins,
        enable_model_summary=summary,
        **kwargs,
    )
    for logger in trainer.loggers if run_config is not None else []:
        logger.log_hyperparams({**run_config, "axes": run_axes(cfg)})
    return trainer


def run_axes(cfg: DictConfig) -> dict[str, Any]:
    """The choices that identify a run (for logger config, tags and grouping)."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    axes = {
        k: choices.get(k) for k in ("data", "model", "tokeniser", "backbone", "init", "regularisation", "optimizer")
    }
    return {**axes, "seed": cfg.get("seed")}


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return [instantiate(node) for node in (cfg or {}).values() if isinstance(node, DictConfig) and "_target_" in node]


def instantiate_loggers(cfg: DictConfig | None, axes: dict[str, Any] | None = None) -> list[Any]:
    """The configured loggers. W&B (:class:`WandbLogger` or a subclass): offline unless an API key exists, the
    run's ``axes`` as tags (``model=factorised_encoder``, ...) and, in a multirun, the sweep's name as its group."""
    loggers = []
    for name, node in (cfg or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        wandb = issubclass(get_class(node._target_), WandbLogger)
        if wandb:
            node = OmegaConf.merge(node, wandb_settings(node, axes or {}))
            later = f" (upload later: wandb sync {node.save_dir}/wandb/offline-run-*)" if node.offline else ""
            mode = "offline" if node.offline else "online"
            log.info("logger %s: W&B %s, group %s%s", name, mode, node.group, later)
        loggers.append(instantiate(node))
        if wandb:  # Lightning always passes it (None): W&B warns that it has no effect
            loggers[-1]._wandb_init.pop("anonymous", None)
    return loggers


def wandb_settings(node: DictConfig, axes: dict[str, Any]) -> dict[str, Any]:
    """What a W&B logger's config leaves open: ``offline`` (null: offline unless W&B can go online without a
    prompt) and ``group`` (null: the sweep's name); the run's axes are added to its tags."""
    settings: dict[str, Any] = {"tags": [*(node.get("tags") or []), *(f"{k}={v}" for k, v in axes.items())]}
    if node.get("offline") is None:
        settings["offline"] = not wandb_has_api_key()
    if node.get("group") is None:
        settings["group"] = sweep_name()
    return settings


def wandb_has_api_key() -> bool:
    """True when W&B can go online without a prompt: WANDB_API_KEY or a `wandb login` entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def fit(trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None) -> None:
    """``trainer.fit``, from ``ckpt_path`` when given. A stop signal (SIGTERM, SIGUSR1, or Ctrl-C: SIGINT) stops
    the run after the current batch, saving ``last.ckpt`` (:class:`vivit.training.callbacks.FaultTolerance`);
    the run then says how to continue and exits with status 130 (Ctrl-C) or 143: it has not finished."""
    log.info(
        "effective batch %d = data.batch_size %d x %d processes x trainer.accumulate_grad_batches %d "
        "(the learning rate is used as given, not scaled with the batch)",
        datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
        datamodule.batch_size,
        trainer.world_size,
        trainer.accumulate_grad_batches,
    )
    try:
        with interrupt_as_stop_signal() as interrupted:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        out = trainer.default_root_dir
        also = "" if sweep_name() is None else " (this job alone; a named sweep or search run again resumes it too)"
        log.warning(
            "stopped by a signal: last.ckpt is in %s/checkpoints; continue with: python src/train.py resume=%s%s",
            *(out, out, also),
        )
        raise SystemExit(130 if interrupted else 143) from None  # 128 + SIGINT or SIGTERM: not finished


@contextmanager
def interrupt_as_stop_signal() -> Iterator[list[bool]]:
    """While fitting, Ctrl-C (SIGINT) does what SIGTERM does; a second Ctrl-C aborts at once. Yields a list that
    holds True once Ctrl-C was pressed. An ignored SIGINT (a background job) stays ignored."""
    pressed: list[bool] = []
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        yield pressed
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, previous)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):  # before Lightning handles SIGTERM
            raise KeyboardInterrupt
        pressed.append(True)
        log.warning("Ctrl-C: stopping after this batch and saving last.ckpt (Ctrl-C again aborts at once)")
        signal.raise_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)
