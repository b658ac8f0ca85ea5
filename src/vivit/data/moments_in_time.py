"""Moments in Time (dataset_formats.md §3): one record per 3-second video, the whole file.

Expected layout under ``root``, as released::

    moments_categories.txt                   <category>,<index> lines, no header (the index is authoritative)
    trainingSet.csv, validationSet.csv       <filename>,<label>,<agreed>,<disagreed> lines, no header
    training/<category>/<video>.mp4, validation/<category>/<video>.mp4

``filename`` is relative to ``training/`` or ``validation/`` and includes the category folder. The class
comes from the ``label`` column (in the release it always names the same category as the folder).
There is no released test split: ``split="test"`` reads the validation set.
"""

from __future__ import annotations

from pathlib import Path

from vivit.data.annotations import names_by_index, read_csv, whole_video_records
from vivit.data.records import VideoRecord

LAYOUT = (  # for messages about a root that is not laid out so
    "moments_categories.txt, trainingSet.csv, validationSet.csv; videos {training,validation}/<category>/<video>.mp4"
)
SPLITS = {  # split -> (annotation file, video folder)
    "train": ("trainingSet.csv", "training"),
    "val": ("validationSet.csv", "validation"),
    "test": ("validationSet.csv", "validation"),
}
CATEGORIES = "moments_categories.txt"
_COLUMNS = ("filename", "label", "agreed", "disagreed")


def read_moments_class_names(root: str | Path) -> dict[str, list[str]]:
    """``{"label": [...]}``: the categories (``+`` between words) by their index in the categories file."""
    path = Path(root) / CATEGORIES
    rows = read_csv(path, fieldnames=("category", "index"))
    return {"label": names_by_index(((row["category"], row["index"]) for row in rows), path)}


def read_moments_in_time(root: str | Path, split: str, strict: bool = False) -> list[VideoRecord]:
    """Videos of ``split`` ("train", "val" or "test" = validation); missing files and unknown labels are reported
    and left out (``strict``: an unknown label raises)."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    file_name, folder = SPLITS[split]
    path = root / file_name
    items = [
        (row["filename"], row["label"], root / folder / row["filename"]) for row in read_csv(path, fieldnames=_COLUMNS)
    ]
    return whole_video_records(items, read_moments_class_names(root)["label"], path, root, strict=strict)
