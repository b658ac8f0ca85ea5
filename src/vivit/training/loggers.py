"""A CSV log that a resumed run continues instead of starting again."""

from __future__ import annotations

import csv
import os
import warnings

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["ContinuedCSVLogger"]


class ContinuedCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``, except that an earlier ``metrics.csv`` in its directory is continued, not
    deleted: a run resumed in its own directory (``resume=<run dir>``, ``ckpt_path=last``) keeps one log.

    The earlier rows from the first step that this run logs on are dropped when it logs it: they came after
    the checkpoint that the run resumed from, and the run logs those steps again. A run that starts from
    scratch thus replaces the log, as Lightning's does. When new metrics appear the file is rewritten with
    every column (Lightning's writer does that too).

    Only public Lightning API: its writer (Lightning 2.6) deletes an earlier file when it starts (documented:
    "overwritten"), so the file is read before and written back at once, and a run killed before its first row
    loses nothing (``test_csv_log_survives_until_the_resumed_run_logs`` fails if the writer changes that).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = False  # whether the writer exists
        self.earlier: list[dict[str, str]] | None = None  # an earlier file's rows, until this run's first save

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self.started:
            return super().experiment
        path = os.path.join(self.log_dir, ExperimentWriter.NAME_METRICS_FILE)
        fs = get_filesystem(path)
        text = None
        if fs.isfile(path):
            with fs.open(path, "r", newline="") as file:
                text = file.read()
        with warnings.catch_warnings():  # "... Previous log files in this directory will be deleted": not here
            warnings.filterwarnings("ignore", "Experiment logs directory .* exists and is not empty")
            writer = super().experiment
        self.started = True
        if text is not None:
            with fs.open(path, "w", newline="") as file:
                file.write(text)
            reader = csv.DictReader(text.splitlines())
            self.earlier = list(reader)
            writer.metrics_keys = sorted(reader.fieldnames or [])
        return writer

    @rank_zero_only
    def save(self) -> None:
        writer = self.experiment
        if self.earlier is not None and writer.metrics:
            first = min(row["step"] for row in writer.metrics)
            kept = [row for row in self.earlier if float(row["step"]) < first]
            if len(kept) < len(self.earlier):  # the file again, with the rows of the steps before this run's first
                fs = get_filesystem(writer.metrics_file_path)
                fs.rm_file(writer.metrics_file_path)
                writer.metrics_keys = []
                writer.metrics = kept + writer.metrics
            self.earlier = None
        super().save()
