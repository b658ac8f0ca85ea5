"""Wiring from a composed config to a run: data → model → init → trainer → fit → test → results.

``train(cfg)`` is src/train.py; ``evaluate(cfg)`` is src/eval.py: it rebuilds a run from the config stored inside
its checkpoint and tests it. The parts live in their own modules: where a run starts (``vivit.resume``), the run
config in checkpoints (``vivit.checkpoints``), the trainer with its callbacks and loggers (``vivit.trainer``), a
DDP job of a multirun (``vivit.multirun``) and what a run prints (``vivit.console``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from vivit.checkpoints import CONFIG_KEY, load_checkpoint, load_model, stored_normalisation, with_command_overrides
from vivit.config import hydra_overrides
from vivit.console import print_config, summarise
from vivit.multirun import multirun_job_launches_processes, run_job_in_subprocess
from vivit.report import RESULTS_FILE, save_results
from vivit.resume import finished_run, resume_checkpoint
from vivit.trainer import build_trainer, fit, run_axes

__all__ = ["CONFIG_KEY", "build", "evaluate", "load_model", "train"]  # load_model, CONFIG_KEY: vivit.checkpoints'

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test one run; returns its final metrics (validation and test).

    A run whose directory holds ``results.json`` has finished: it is skipped and its metrics are returned
    (:func:`vivit.resume.finished_run`). Ctrl-C stops fitting as SIGTERM does (:func:`vivit.trainer.fit`).
    """
    if (metrics := finished_run(cfg)) is not None:
        return metrics
    if multirun_job_launches_processes(cfg):  # -m with trainer=ddp: this job alone, in a child process
        return run_job_in_subprocess(cfg)
    print_config(cfg, cfg.paths.output_dir)
    ckpt_path = resume_checkpoint(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    init = instantiate(cfg.init) if ckpt_path is None and "_target_" in cfg.get("init", {}) else None
    cfg.data.merge_with(input_normalisation(cfg, ckpt_path, init))  # decided before the data is built

    datamodule, model = build(cfg, stages=[s for s, on in (("fit", cfg.train), ("test", cfg.test)) if on])
    if init is not None:  # a resumed run restores its trained weights instead
        initialise(model, init, cfg.paths.output_dir)
    trainer = build_trainer(cfg, run_config=OmegaConf.to_container(cfg, resolve=True))
    if cfg.train:
        fit(trainer, model, datamodule, ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.test:
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)  # summarise() prints them
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    summarise(trainer, metrics, best)
    save_run_results(cfg, metrics)
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test a checkpoint, rebuilding its model and data from the config saved inside it, with this command's
    ``data.*`` and ``model.*`` overrides (``data.test_clips=4``, ``model.view_average=softmax``)."""
    print_config(cfg, cfg.paths.output_dir)
    checkpoint, run_cfg = load_checkpoint(cfg.ckpt_path)
    run_cfg = with_command_overrides(run_cfg, cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(run_cfg, stages=["test"])
    model.load_state_dict(checkpoint["state_dict"])  # the weights alone: the training callbacks' state stays out
    trainer = build_trainer(cfg, enable_checkpointing=False)
    trainer.test(model, datamodule=datamodule, verbose=False)  # summarise() prints the metrics
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    summarise(trainer, metrics, str(cfg.ckpt_path))
    save_run_results(run_cfg, metrics, out=cfg.paths.output_dir)  # `-m data.test_clips=1,2,4`: a sweep to report
    return metrics


def build(cfg: DictConfig, stages: list[str] = ()) -> tuple[L.LightningDataModule, L.LightningModule]:
    """Data module and model from their config nodes: every construction-time check runs here, and the
    annotations of the ``stages`` that the run will reach are read now, not after hours of fitting."""
    datamodule = instantiate(cfg.data)
    if getattr(datamodule, "heads", None):  # class counts read from the dataset (data.heads.<head>=auto): to the model
        cfg.data.heads, cfg.data.num_classes = dict(datamodule.heads), datamodule.num_classes
    model = instantiate(cfg.model)
    if cfg.model.get("optimizer") is not None:  # built for real only when fitting starts: check it now
        try:
            instantiate(cfg.model.optimizer)([torch.nn.Parameter(torch.zeros(1))])
        except (TypeError, ValueError) as error:
            raise ValueError(f"optimizer ({cfg.model.optimizer._target_}): {error}") from error
    if stages and hasattr(datamodule, "read_annotations"):
        datamodule.read_annotations(*stages)
    return datamodule, model


def input_normalisation(cfg: DictConfig, ckpt_path: str | None, init: Any) -> dict[str, list[float]]:
    """The run's input normalisation (``data.mean``, ``data.std``): a resumed checkpoint's (the weights were
    trained with it), else the one that ``init``'s weights expect (its ``normalisation``, where the source
    states it), else the data config's."""
    if ckpt_path not in (None, "best", "hpc") and (stored := stored_normalisation(ckpt_path)) is not None:
        return stored
    if init is not None and getattr(init, "normalisation", None) is not None:
        return {"mean": list(init.normalisation[0]), "std": list(init.normalisation[1])}
    if init is not None:
        log.warning("%s does not state its input normalisation: using data.mean/std", cfg.init.get("source"))
    return {"mean": list(cfg.data.mean), "std": list(cfg.data.std)}


def initialise(model: L.LightningModule, init: Any, out: str) -> None:
    """Loads the init source's weights into ``model.net``; the report goes to the log and ``init_report.json``."""
    report = init(model.net)
    log.info("%s", report)
    if rank_zero_only.rank == 0:
        report.save(Path(out) / "init_report.json")


@rank_zero_only
def save_run_results(cfg: DictConfig, metrics: dict[str, float], out: str | Path | None = None) -> None:
    """``<out>/results.json`` for reports (``out``: the run directory by default): axes, overrides, metrics,
    params, GMACs, throughput. ``cfg`` is the run config that built the model; the network is built again on the
    meta device (no memory, no compute), as the trained one may be compiled or wrapped."""
    with torch.device("meta"):
        net = instantiate(cfg.model.net)
    video_shape = (net.tokeniser.in_chans, *net.tokeniser.video_size)
    path = Path(out or cfg.paths.output_dir) / RESULTS_FILE
    save_results(path, net, video_shape, metrics, axes=run_axes(cfg), overrides=hydra_overrides())
