"""What UCF-101 and HMDB-51 share: three official train/test splits, list files parsed by pytorchvideo, videos
listed in a case that their files on disk may not have.

Torch-free, as the readers are on import (``vivit.config`` reads a dataset's class table before torch is
imported): they import pytorchvideo, which imports torch, when they read a list.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

OFFICIAL_SPLITS = (1, 2, 3)
# The framework's split -> the part of an official split it reads: neither dataset has a validation set, so
# validation and testing both read the split's test videos, as published UCF-101 and HMDB-51 results do.
PARTS = {"train": "train", "val": "test", "test": "test"}


def check_official_split(split: Any) -> int:
    """``split`` (``data.split``), one of the official splits 1, 2 or 3."""
    if isinstance(split, bool) or split not in OFFICIAL_SPLITS:
        raise ValueError(f"data.split must be 1, 2 or 3 (the dataset's official train/test splits), got {split!r}")
    return split


def part_of(split: str) -> str:
    """The part of the official split ("train" or "test") that the framework's ``split`` reads."""
    if split not in PARTS:
        raise ValueError(f"split must be one of {list(PARTS)}, got {split!r}")
    return PARTS[split]


def parsed_by_pytorchvideo(
    parse: Callable[[list[Path]], Any], paths: Sequence[Path], line_ok: Callable[[str], bool], expected: str
) -> Any:
    """``parse(paths)``: a pytorchvideo reader of list files, whose failures become one line naming a file.

    pytorchvideo fails on a blank line (a real list may have one), asserts that a file exists and that it read
    rows, returns (instead of raising) a ``RuntimeError`` for a file it does not take, and fails with Python's
    own message on a malformed line. Here it reads copies without the blank lines (same names: HMDB-51's class
    is in the name); a missing file is a ``FileNotFoundError``, and the rest a ``ValueError`` that names the
    first line that ``line_ok`` refuses (with what was ``expected`` there), or the files when none has a row.
    """
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"annotation file not found: {path}")
    texts = {path: path.read_text(errors="replace").splitlines() for path in paths}
    with tempfile.TemporaryDirectory(prefix="vivit-lists-") as folder:
        readable = []
        for path, lines in texts.items():
            if all(line.strip() for line in lines):
                readable.append(path)
            else:
                readable.append(Path(folder) / path.name)
                readable[-1].write_text("".join(f"{line}\n" for line in lines if line.strip()))
        try:
            parsed = parse(readable)
        except (AssertionError, ValueError, IndexError, KeyError) as error:
            for path, lines in texts.items():
                for number, line in enumerate(lines, 1):
                    if line.strip() and not line_ok(line):
                        raise ValueError(f"{path}: line {number}: expected {expected}, got {line!r}") from None
            files = ", ".join(str(path) for path in paths[:3]) + (", ..." if len(paths) > 3 else "")
            problem = "no rows" if isinstance(error, AssertionError) else f"unreadable ({error})"
            raise ValueError(f"{files}: {problem}") from None
    if isinstance(parsed, Exception):
        raise ValueError(str(parsed))
    return parsed


class VideoFolder:
    """The video files below ``directory``, found by their path relative to it, exactly or else in any case
    (UCF-101 lists ``HandstandPushups/v_HandStandPushups_g01_c01.avi``, some copies store other cases)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[str, Path] = {}  # relative path -> path
        for folder, _, files in sorted(os.walk(directory)):
            for name in sorted(files):
                path = Path(folder) / name
                self.files[path.relative_to(directory).as_posix()] = path
        self.by_lower_case = {relative.lower(): path for relative, path in reversed(self.files.items())}

    def find(self, relative: str) -> Path:
        """The file at ``relative`` (with ``/`` between folders): exact, else in another case; else the exact
        path, which does not exist (the row is reported as missing)."""
        if relative in self.files:
            return self.files[relative]
        return self.by_lower_case.get(relative.lower(), self.directory / relative)
