"""Callbacks for runs that survive interruption: resumable checkpoints, preemption signals, non-finite losses."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelSummary
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table
from torchmetrics import Metric, MetricCollection

log = logging.getLogger(__name__)

__all__ = ["FaultTolerance", "LossGuard", "NetworkSummary"]


def _mid_epoch(trainer: L.Trainer) -> bool:
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed < trainer.num_training_batches


class FaultTolerance(Callback):
    """Makes ``<dirpath>/last.ckpt`` a point that training resumes from exactly.

    - Writes it every ``every_n_train_steps`` optimiser steps inside an epoch (the best-checkpoint callback
      writes it at the end of each epoch), and after the current batch when the run receives SIGTERM or
      SIGUSR1; Lightning then stops the run. Without a SLURM environment that owns SIGUSR1 (auto-requeue),
      SIGUSR1 is handled as SIGTERM.
    - Stores what the model and data state leave out: torch's RNG streams (so dropout and stochastic depth
      draw the same masks after a resume) and, in a checkpoint written mid-epoch on one device, the running
      state of the epoch's metrics (so the epoch's ``train/`` metrics cover all of its batches).

    The training loader (:class:`vivit.data.resumable.ResumableLoader`) finds its own position in the epoch.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 100) -> None:
        if every_n_train_steps < 0:
            raise ValueError(
                f"callbacks.fault_tolerance.every_n_train_steps must be >= 0 (0: only at epoch ends), "
                f"got {every_n_train_steps}"
            )
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_train_steps = every_n_train_steps
        self._restored: dict[str, Any] | None = None
        self._saved_at: int | None = None  # global step of the signal checkpoint, once written

    @property
    def state_key(self) -> str:
        return "FaultTolerance"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own handlers (SLURM auto-requeue takes SIGUSR1); Lightning restores them at the end.
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, lambda *_: signal.raise_signal(signal.SIGTERM))
        # Restored here rather than at load time: the sanity check in between draws from the RNG too.
        if self._restored is None:
            return
        torch.set_rng_state(self._restored["rng"]["cpu"])
        if self._restored["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._restored["rng"]["cuda"])
        metrics = self._restored.get("metrics", {})
        if metrics and trainer.world_size == 1:
            for name, metric in pl_module.named_modules():
                if isinstance(metric, Metric) and name in metrics:
                    for key, value in metrics[name].items():
                        setattr(metric, key, value.to(pl_module.device))
        self._restored = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if trainer.received_sigterm:
            if self._saved_at is None:
                self.save(trainer, "the run received a stop signal")
        elif self.every_n_train_steps and step % self.every_n_train_steps == 0 and _mid_epoch(trainer):
            self.save(trainer, f"step {step}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # A signal during validation stops the run before any batch end: save there (Lightning resumes
        # by finishing the validation).
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if isinstance(exception, SIGTERMException) and fitting and self._saved_at is None:
            self.save(trainer, "the run received a stop signal")

    def save(self, trainer: L.Trainer, why: str) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state (optimizer, loops): to resume
        if trainer.received_sigterm:
            self._saved_at = trainer.global_step
        log.info("%s: saved %s (step %d)", why, self.path, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
        return {"rng": {"cpu": torch.get_rng_state(), "cuda": cuda}}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.training and trainer.world_size == 1 and _mid_epoch(trainer):
            states = {
                name: {key: value.detach().cpu() for key, value in metric.metric_state.items()}
                for name, metric in pl_module.named_modules()
                if isinstance(metric, Metric) and all(isinstance(v, torch.Tensor) for v in metric.metric_state.values())
            }
            checkpoint["callbacks"][self.state_key]["metrics"] = states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict


class LossGuard(Callback):
    """Acts on a non-finite (NaN or infinite) training loss, before it reaches the weights.

    ``on_nonfinite="stop"`` raises ``FloatingPointError`` naming the step; the weights and the checkpoints
    on disk are those of the last good step. ``"skip"`` drops that batch's gradients (the optimiser leaves
    every weight as it was; the LR schedule still advances), logs a warning and counts it in
    ``train/skipped_steps``. Under DDP the decision is taken jointly, so every process acts alike.
    """

    def __init__(self, on_nonfinite: str = "stop") -> None:
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"callbacks.loss_guard.on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.skipped = 0
        self._skip = False

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        where = (
            f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx})"
        )
        if self.on_nonfinite == "stop":
            saved = [c.path for c in trainer.callbacks if isinstance(c, FaultTolerance) and c.path.is_file()]
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at {where}: stopping before it reaches the weights. "
                f"Last good checkpoint: {saved[0] if saved else '(none yet)'}. "
                "To skip such steps instead, set callbacks.loss_guard.on_nonfinite=skip."
            )
        self._skip = True
        self.skipped += 1
        log.warning("non-finite training loss at %s: skipping the step (%d so far)", where, self.skipped)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if self._skip:
            optimizer.zero_grad(set_to_none=True)  # a parameter without a gradient is left untouched
            self._skip = False
        if self.on_nonfinite == "skip":
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=False, on_epoch=True, reduce_fx="max")


class NetworkSummary(ModelSummary):
    """Lightning's model summary (to ``max_depth``) without the rows of the metrics, which hold no parameters,
    and without its FLOPs column: Lightning counts FLOPs only by running an ``example_input_array`` through
    the model, which a VideoClassifier does not have, so the column would be all zeros. A run's GMACs per
    clip are in its ``results.json``."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = (Metric, MetricCollection)
        self._metrics = {name for name, module in pl_module.named_modules() if isinstance(module, metrics)}
        super().on_fit_start(trainer, pl_module)

    def summarize(  # type: ignore[override]  # Lightning's is a staticmethod; on_fit_start calls it on self
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        rows = [i for i, name in enumerate(dict(summary_data)["Name"]) if name not in self._metrics]
        columns = [(title, [values[i] for i in rows]) for title, values in summary_data if title != "FLOPs"]
        columns[0] = (columns[0][0], [str(i) for i in range(len(rows))])  # the row numbers
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *columns
        )
        lines = table.split("\n")
        log.info("\n%s", "\n".join(lines[:-1] if lines[-1].endswith("Total Flops") else lines))
