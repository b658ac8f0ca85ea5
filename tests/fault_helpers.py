"""Callbacks that the fault-tolerance tests add to real runs (``+callbacks.<name>._target_=fault_helpers...``)."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PauseAt(Callback):
    """At the start of training step ``step``, writes ``marker`` and waits (at most a minute) for a signal, so
    that a test can interrupt the run at a known point. Only once: not in a process started after ``marker``
    was written (a re-run; the processes of one DDP run all pause). With ``job``, only in that job of a
    multirun."""

    def __init__(self, step: int, marker: str, job: int | None = None) -> None:
        self.step, self.marker, self.job = step, Path(marker), job
        self.paused = self.marker.exists()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.job is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.num != self.job:
                return
        if trainer.global_step == self.step and not self.paused:
            self.paused = True
            self.marker.write_text("paused")
            deadline = time.monotonic() + 60
            while not trainer.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.05)


class PoisonBatch(Callback):
    """Turns the clips of training step ``step`` into NaN, so that its loss is not finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch["video"].fill_(float("nan"))


class CrashAt(Callback):
    """Raises at the start of training step ``step``, as a crash would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"crashed at step {self.step}")
