"""Training throughput in clips per second, measured without waiting for the device on every step."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

__all__ = ["TrainingThroughput"]


class TrainingThroughput(Callback):
    """Logs ``train/clips_per_s`` for every training epoch: clips over the time from the epoch's first
    batch to the end of its last training step (validation and the first batch's start-up excluded).

    Unlike Lightning's ``ThroughputMonitor`` it synchronises the device once per epoch, not per step,
    so the measurement does not slow the training it measures.
    """

    start: float | None = None  # also when a run resumes mid-epoch, where on_train_epoch_start is not called
    clips = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = None
        self.clips = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.start is None:  # time from the end of the first step: data-loader start-up and compilation excluded
            self.start = time.perf_counter()
            return
        self.clips += len(batch["video"])
        if batch_idx + 1 == trainer.num_training_batches and self.clips:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            clips_per_s = self.clips * trainer.world_size / (time.perf_counter() - self.start)
            pl_module.log(  # one value per epoch: a batch-weighted mean of one value is that value
                "train/clips_per_s", clips_per_s, on_step=False, on_epoch=True, sync_dist=False, batch_size=1
            )
