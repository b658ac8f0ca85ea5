"""Annotation records: the labelled segments that every dataset reader returns, and the rows it leaves out."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRecord:
    """One labelled segment: frames ``start`` (0-based) to ``stop`` (exclusive) of the video at ``path``,
    a video file or a folder of its frames as JPEG files (:mod:`vivit.data.decoding`).

    ``stop=None`` means the end of the file: whole-clip datasets (Kinetics, SSv2, Moments in Time) do not
    list frame counts, so the frames are counted when the clip is decoded. ``fps``, the video's native
    frame rate, is needed only with ``data.target_fps``; None: read from the video file when needed.
    """

    path: Path
    start: int
    stop: int | None
    labels: dict[str, int]  # label set -> class id, e.g. {"verb": 3, "noun": 7}
    name: str  # e.g. the EPIC narration_id, for messages
    fps: float | None = None


@dataclass(frozen=True)
class DroppedRow:
    """An annotation row that a reader left out: its label is not a class, or its video is missing."""

    source: Path  # the annotation file (or folder) of the row
    name: str  # the row's name, as in VideoRecord
    file: Path  # the missing video; the annotation file for an unknown label
    problem: str


_dropped_rows: ContextVar[list[DroppedRow] | None] = ContextVar("dropped_rows", default=None)


@contextmanager
def collect_dropped_rows() -> Iterator[list[DroppedRow]]:
    """Collects the rows that :func:`usable_records` leaves out within the block into the list it yields
    (they are still logged), for a report of every problem (``vivit.data.check``)."""
    rows: list[DroppedRow] = []
    token = _dropped_rows.set(rows)
    try:
        yield rows
    finally:
        _dropped_rows.reset(token)


def usable_records(
    records: Sequence[VideoRecord],
    unknown: Sequence[tuple[str, str]],
    source: Path,
    root: Path,
    strict: bool = False,
) -> list[VideoRecord]:
    """The records of annotation file ``source`` whose video exists: every reader ends with this check.

    ``unknown`` holds ``(row name, label)`` for the rows whose label is not a class of the dataset. Those
    and the rows whose video is missing are logged, with a count and the first names, and left out; the
    split goes on without them. With ``strict`` (``data.annotations.strict``), an unknown label raises,
    naming the row, instead. Raises, naming ``source`` and ``root``, when no row is left. Within
    :func:`collect_dropped_rows`, the rows left out are also collected, and ``strict`` raises nothing: a
    report lists every problem.
    """
    exists: dict[Path, bool] = {}
    kept, missing = [], []
    for record in records:
        if record.path not in exists:
            exists[record.path] = record.path.exists()  # a video file or a folder of frames
        (kept if exists[record.path] else missing).append(record)
    total = len(records) + len(unknown)
    dropped = _dropped_rows.get()
    if strict and unknown and dropped is None:
        name, label = unknown[0]
        raise ValueError(
            f"{source}: row {name}: label {label!r} is not a class ({len(unknown)} such rows; "
            "data.annotations.strict=false skips and reports them)"
        )
    if dropped is not None:
        dropped += [DroppedRow(source, name, source, f"label {label!r} is not a class") for name, label in unknown]
        dropped += [DroppedRow(source, r.name, r.path, "video is missing") for r in missing]
    if unknown:
        first = ", ".join(f"{name} ({label!r})" for name, label in unknown[:5])
        log.warning(
            "%s: skipped %d of %d rows whose label is not a class (first: %s)", source, len(unknown), total, first
        )
    if missing:
        first = ", ".join(record.name for record in missing[:5])
        log.warning(
            "%s: skipped %d of %d rows whose video is missing under %s (first: %s; e.g. no %s)",
            source,
            len(missing),
            total,
            root,
            first,
            missing[0].path,
        )
    if not kept:
        example = f" (e.g. no {missing[0].path})" if missing else ""
        raise ValueError(f"{source}: none of its {total} rows has a known label and a video under {root}{example}")
    return kept
