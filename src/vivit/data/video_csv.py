"""A custom dataset of whole video files, in either of two layouts under ``root``::

    train.csv, val.csv, test.csv     header path,label; path relative to root (any folders), label a class name
    train/<class>/<video>.mp4, val/<class>/<video>.mp4, test/<class>/<video>.mp4    (used when there is no train.csv)

Videos may be .mp4, .webm, .mkv, .avi or .mov. The classes are the training labels (or the class
folders of ``train/``), sorted as strings: index = position in that list.
"""

from __future__ import annotations

from pathlib import Path

from vivit.data.annotations import read_csv, video_files, whole_video_records
from vivit.data.datamodule import VideoRecord

SPLITS = ("train", "val", "test")


def _items(root: Path, split: str) -> tuple[Path, list[tuple[str, str, Path]]]:
    """The split's source (CSV file or folder) and its ``(name, label, video path)`` items."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if (root / "train.csv").is_file():
        source = root / f"{split}.csv"
        return source, [(row["path"], row["label"], root / row["path"]) for row in read_csv(source, ("path", "label"))]
    source = root / split
    if not source.is_dir():
        raise FileNotFoundError(f"neither {root / 'train.csv'} nor the class folders {source}/<class>/ exist")
    return source, [(str(p.relative_to(root)), p.parent.name, p) for p in video_files(source, depth=2)]


def read_video_csv_class_names(root: str | Path) -> dict[str, list[str]]:
    """``{"label": [...]}``: the sorted training labels."""
    _, items = _items(Path(root), "train")
    return {"label": sorted({label for _, label, _ in items})}


def read_video_csv(root: str | Path, split: str) -> list[VideoRecord]:
    """Videos of ``split`` ("train", "val" or "test"); missing files and unknown labels are reported."""
    root = Path(root)
    source, items = _items(root, split)
    return whole_video_records(items, read_video_csv_class_names(root)["label"], source, root)
