"""A CSV log that a resumed run continues instead of starting again."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["ContinuedCSVLogger"]


class ContinuedCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``, except that an earlier ``metrics.csv`` in its directory is continued, not
    deleted: a run resumed in its own directory (``resume=<run dir>``, ``ckpt_path=last``) keeps one log.

    The earlier rows from the first step that this run logs on are dropped when it logs it: they came after
    the checkpoint that the run resumed from, and the run logs those steps again. A run that starts from
    scratch thus replaces the log, as Lightning's does. When new metrics appear the file is rewritten with
    every column (Lightning's writer does that too).
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuedWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuedWriter(log_dir=self.log_dir)
        return self._experiment


class ContinuedWriter(ExperimentWriter):
    """Lightning's metrics writer, reading an existing ``metrics.csv`` instead of deleting it."""

    earlier: list[dict[str, str]] | None = None  # the rows found, until this run's first save

    def _check_log_dir_exists(self) -> None:  # Lightning's writer deletes the file here
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                reader = csv.DictReader(file)
                self.earlier = list(reader)
                self.metrics_keys = sorted(reader.fieldnames or [])

    def save(self) -> None:
        if self.earlier is not None and self.metrics:
            first = min(row["step"] for row in self.metrics)
            kept = [row for row in self.earlier if float(row["step"]) < first]
            if not kept:  # a run from scratch: a new log
                self._fs.rm_file(self.metrics_file_path)
                self.metrics_keys = []
            elif len(kept) < len(self.earlier):
                with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                    writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                    writer.writeheader()
                    writer.writerows(kept)
            self.earlier = None
        super().save()
