"""The account of the videos that fail to decode: one callback, which every :class:`VideoClassifier` brings."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torchmetrics import Metric

log = logging.getLogger(__name__)


class MarkedCount(Metric):
    """How many of N items are marked in any process: the sum of the element-wise maximum of (N,) marks. ``union``
    keeps the marks of its last compute: those of every process once Lightning has synced them."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("marks", torch.zeros(0), dist_reduce_fx="max")
        self.union = torch.zeros(0)

    def update(self, marks: torch.Tensor) -> None:
        self.marks = marks if self.marks.shape != marks.shape else torch.maximum(self.marks, marks)

    def compute(self) -> torch.Tensor:
        self.union = self.marks.detach().cpu()  # called inside the sync: the marks of all processes
        return self.marks.sum()


class BadVideos(Callback):
    """Counts, names and limits the videos that fail to decode, over a whole run.

    The loader workers replace a training video that fails to decode by another (and leave out an evaluation
    one, with ``data.skip_bad_eval_videos``), and name it in the batch (``batch["bad_files"]``). This callback:

    - keeps the distinct failed videos of each split (train, val, test) for the run, across a resume (its state is
      in the checkpoint), and logs each new one;
    - stops training, naming them, once more than the fraction ``max_bad_videos`` of the training videos have
      failed (``data.max_bad_videos``, read from the datamodule);
    - logs ``<stage>/bad_videos`` at the end of each epoch: the videos of the stage that have failed so far in any
      process. Each process keeps the account of the videos it decoded, and takes in the other processes' when
      Lightning syncs the logged counts (after each epoch's end hooks: no collective of its own, which could meet
      another callback's); so under DDP the checkpoint holds every process's account up to the previous sync,
      and the first process's since.

    It needs the datamodule's ``videos(split)`` (the split's distinct files) and does nothing for a datamodule
    without it. :class:`vivit.training.video_classifier.VideoClassifier` returns one instance from
    ``configure_callbacks``, so that every trainer of the model counts, whatever its configured callbacks.
    """

    def __init__(self) -> None:
        self.bad_files: dict[str, set[str]] = {}  # split -> the videos that failed so far
        self.counts: dict[str, tuple[list[str], MarkedCount]] = {}  # split -> its videos and logged count

    def take_in_synced(self) -> None:
        """Adds the videos that any process had marked at the last sync of the counts."""
        for split, (videos, count) in self.counts.items():
            if len(count.union) == len(videos):
                marked = (video for video, mark in zip(videos, count.union.tolist(), strict=True) if mark)
                self.bad_files.setdefault(split, set()).update(marked)

    @staticmethod
    def _videos(trainer: L.Trainer, split: str) -> list[str] | None:
        datamodule = trainer.datamodule
        return datamodule.videos(split) if hasattr(datamodule, "videos") else None

    def add(self, trainer: L.Trainer, split: str, files: Sequence[str]) -> None:
        """Adds ``files`` (videos of ``split`` that failed to decode) to the account, logs the new ones, and raises
        when more than ``max_bad_videos`` of the distinct training videos have failed."""
        bad = self.bad_files.setdefault(split, set())
        new = sorted(set(files) - bad)
        videos = self._videos(trainer, split)
        if not new or videos is None:
            return
        bad.update(new)
        if split != "train":
            evaluated = len(videos) - len(bad)
            log.warning(
                "%s: %d of %d videos failed to decode and are left out, %d evaluated (new: %s)",
                *(split, len(bad), len(videos), evaluated, ", ".join(new)),
            )
            return
        log.warning("train: %d of %d videos failed to decode so far (new: %s)", len(bad), len(videos), ", ".join(new))
        limit = trainer.datamodule.max_bad_videos
        if len(bad) > limit * len(videos):
            names = sorted(bad)
            more = f" and {len(names) - 20} more" if len(names) > 20 else ""
            raise ValueError(  # a fault of the data, answered in one line (vivit.run_directory.check_message)
                f"{len(bad)} of the {len(videos)} training videos failed to decode, more than "
                f"data.max_bad_videos={limit}: {', '.join(names[:20])}{more}. src/check_data.py with the same "
                "data= and data.root= names every damaged video: repair or remove them, or raise data.max_bad_videos"
            )

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        self.add(trainer, "train", batch.get("bad_files", ()))

    def on_validation_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0):
        self.add(trainer, "val", batch.get("bad_files", ()))

    def on_test_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0):
        self.add(trainer, "test", batch.get("bad_files", ()))

    def on_predict_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0):
        self.add(trainer, "test", batch.get("bad_files", ()))

    def log_count(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> None:
        """Logs ``<split>/bad_videos``: the videos of the split that have failed so far, in any process. The
        processes' marks are merged when Lightning syncs its logged metrics, in the order it syncs them all: a
        collective of its own here could meet another process's in another callback (a progress bar's)."""
        if (videos := self._videos(trainer, split)) is None:
            return
        self.take_in_synced()
        bad = self.bad_files.get(split, set())
        count = self.counts.setdefault(split, (videos, MarkedCount()))[1].to(pl_module.device)
        count.update(torch.tensor([float(video in bad) for video in videos], device=pl_module.device))
        name = f"{split}/bad_videos"
        pl_module.log(name, count, on_step=False, on_epoch=True, batch_size=1, metric_attribute=f"BadVideos.{name}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_count(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_count(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_count(trainer, pl_module, "test")

    def state_dict(self) -> dict[str, dict[str, list[str]]]:
        self.take_in_synced()
        return {"bad_files": {split: sorted(files) for split, files in self.bad_files.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.bad_files = {split: set(files) for split, files in state.get("bad_files", {}).items()}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """A checkpoint written before this callback kept the account in the datamodule's state: read from there
        (a newer checkpoint's own state is loaded after this hook and takes its place)."""
        if "bad_files" in (old := checkpoint.get("VideoDataModule") or {}):
            self.load_state_dict(old)
