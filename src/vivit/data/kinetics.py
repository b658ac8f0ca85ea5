"""Kinetics-400/600/700 (dataset_formats.md §1): one record per trimmed YouTube clip, the whole file.

Expected layout under ``root``::

    annotations/train.csv, annotations/val.csv (or validate.csv), annotations/test.csv
    train/<clip>.mp4, val/<clip>.mp4, test/<clip>.mp4           flat, as the CVDF mirror
    (or train/<label>/<clip>.mp4, with spaces or underscores)   per class, as the crawler or mmaction2

The CSVs are the official ones (``label,youtube_id,time_start,time_end,split[,is_cc]``), read by header
name. A clip's file is ``{youtube_id}_{time_start:06d}_{time_end:06d}`` with any video suffix, found
anywhere below its split's folder. The class index is the position of the label in the sorted list of the
training labels. ``split="test"`` needs a labelled ``test.csv`` (the CVDF one): the official K400/K600
test lists have no ``label`` column (an :class:`UnlabelledSplitError`; ``data.eval_split=auto`` then tests on val).
"""

from __future__ import annotations

from pathlib import Path

from vivit.data.annotations import UnlabelledSplitError, find_file, index_videos, read_csv, whole_video_records
from vivit.data.records import VideoRecord

LAYOUT = (  # for messages about a root that is not laid out so
    "annotations/{train,val,test}.csv (val: or validate.csv) with the official label,youtube_id,time_start,"
    "time_end columns; clips {train,val,test}/<youtube_id>_<start:06d>_<end:06d>.mp4, flat or in label folders"
)
SPLIT_FILES = {"train": ("train.csv",), "val": ("val.csv", "validate.csv"), "test": ("test.csv",)}
_REQUIRED = ("label", "youtube_id", "time_start", "time_end")


def _annotation_file(root: Path, split: str) -> Path:
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    return find_file(root / "annotations", SPLIT_FILES[split])


def read_kinetics_class_names(root: str | Path) -> dict[str, list[str]]:
    """``{"label": [...]}``: the training labels, sorted (the class index used by every Kinetics loader)."""
    path = _annotation_file(Path(root), "train")
    return {"label": sorted({row["label"] for row in read_csv(path, _REQUIRED)})}


def read_kinetics(root: str | Path, split: str, strict: bool = False) -> list[VideoRecord]:
    """Clips of ``split`` ("train", "val" or "test"); rows with a missing file or unknown label are reported and
    left out (``strict``: an unknown label raises)."""
    root = Path(root)
    path = _annotation_file(root, split)
    rows = read_csv(path, _REQUIRED[1:])
    if rows and "label" not in rows[0]:
        raise UnlabelledSplitError(f"{path} has no label column (the official K400/K600 test lists have none)")
    videos = index_videos(root / split)
    items = []
    for row in rows:
        try:
            clip = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"
        except ValueError:
            raise ValueError(
                f"{path}: row {row['youtube_id']}: time_start={row['time_start']!r} and "
                f"time_end={row['time_end']!r} must be integers"
            ) from None
        items.append((clip, row["label"], videos.get(clip, root / split / f"{clip}.mp4")))
    return whole_video_records(items, read_kinetics_class_names(root)["label"], path, root, strict=strict)
