"""Shared pieces of the annotation readers: CSV and JSON files, class tables, video files on disk.

Every error names the file (and the row or key) that caused it.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vivit.data.records import VideoRecord, usable_records

VIDEO_SUFFIXES = (".mp4", ".m4v", ".webm", ".mkv", ".avi", ".mov")  # compared lower-cased: EPIC's .MP4 counts


class UnlabelledSplitError(ValueError):
    """A split's annotation file lists videos without their labels (e.g. Kinetics' official test list)."""


def read_csv(
    path: Path, required: Sequence[str] = (), *, fieldnames: Sequence[str] | None = None, delimiter: str = ","
) -> list[dict[str, str]]:
    """Rows by column name: from the header, or from ``fieldnames`` for a file without one.

    Fails naming the file when it is missing, lacks a ``required`` column, or (headerless) has a row with
    fewer or more fields than ``fieldnames``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f, fieldnames=fieldnames, delimiter=delimiter)
        columns = reader.fieldnames or []
        for column in required:
            if column not in columns:
                raise ValueError(f"{path}: missing column {column!r} (has {columns})")
        rows = []
        for row in reader:
            if fieldnames is not None and (None in row or None in row.values()):
                raise ValueError(f"{path}: line {reader.line_num} must have the {len(fieldnames)} fields {fieldnames}")
            rows.append(row)
        return rows


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def find_file(directory: Path, names: Sequence[str]) -> Path:
    """The first of ``names`` that exists in ``directory`` (datasets are released under several names)."""
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"annotation file not found: none of {list(names)} is in {directory}")


def names_by_index(pairs: Iterable[tuple[str, str | int]], path: Path) -> list[str]:
    """Class names ordered by their index, from ``(name, index)`` pairs; the indices must be 0..K-1, each once."""
    pairs = list(pairs)
    for name, index in pairs:
        if not str(index).strip().isdigit():
            raise ValueError(f"{path}: class {name!r} has index {index!r}, not a non-negative integer")
    by_index = {int(index): name for name, index in pairs}
    if sorted(by_index) != list(range(len(pairs))) or len(set(by_index.values())) != len(pairs):
        raise ValueError(f"{path}: class indices must be 0..K-1, each once, for K different names")
    return [by_index[i] for i in range(len(pairs))]


def whole_video_records(
    items: Iterable[tuple[str, str, Path]],
    class_names: Sequence[str],
    source: Path,
    root: Path,
    fps: Mapping[str, float] | None = None,
    strict: bool = False,
) -> list[VideoRecord]:
    """Single-label records of whole files from ``(row name, label, video path)`` items of annotation ``source``.

    A label's class is its position in ``class_names``; rows with another label, or with a missing video,
    are reported and left out by :func:`usable_records` (``strict``: an unknown label raises). ``fps`` gives
    the frame rate of the rows it names.
    """
    classes = {name: i for i, name in enumerate(class_names)}
    fps = fps or {}
    records, unknown = [], []
    for name, label, video in items:
        if label in classes:
            labels = {"label": classes[label]}
            records.append(VideoRecord(path=video, start=0, stop=None, labels=labels, name=name, fps=fps.get(name)))
        else:
            unknown.append((name, label))
    return usable_records(records, unknown, source, root, strict)


def video_files(directory: Path, depth: int) -> list[Path]:
    """Video files exactly ``depth`` levels below ``directory`` (1: ``dir/x.mp4``, 2: ``dir/class/x.mp4``), sorted,
    and the folders there, each taken for a folder of a video's frames."""
    pattern = "/".join(["*"] * depth)
    return sorted(p for p in directory.glob(pattern) if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES)


def index_videos(directory: Path) -> dict[str, Path]:
    """File stem -> path of every video file under ``directory`` (any depth); empty when it does not exist.

    Lets a reader find a clip whatever the layout of its copy: flat, or in per-class folders.
    """
    index: dict[str, Path] = {}
    for folder, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() in VIDEO_SUFFIXES:
                index.setdefault(stem, Path(folder) / name)
    return index


def layout_error(problem: str, reader: Callable, root: str | Path) -> FileNotFoundError:
    """An error that says what is wrong with ``data.root`` (``problem``), the layout that the dataset's annotation
    ``reader`` expects under it (its module's ``LAYOUT``) and how to check a copy (python src/check_data.py).
    Torch-free: src/train.py answers a root that holds no dataset before its imports (vivit.config)."""
    from hydra.core.hydra_config import HydraConfig

    while isinstance(reader, functools.partial):  # from the config (and OfficialSplitsDataModule's, data.split)
        reader = reader.func
    layout = getattr(sys.modules.get(getattr(reader, "__module__", ""), None), "LAYOUT", None)
    expected = f". Expected under data.root: {layout}" if layout else ""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra is not None and hydra.job.name == "check_data":
        return FileNotFoundError(f"{problem}{expected}")
    name = (hydra.runtime.choices.get("data") if hydra is not None else None) or "<name>"
    return FileNotFoundError(
        f"{problem}{expected}. Set data.root to the dataset's directory, or list every problem of this one "
        f"with: python src/check_data.py data={name} data.root={root}"
    )
