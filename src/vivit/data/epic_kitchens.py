"""EPIC-KITCHENS-100 annotations (dataset_formats.md §4): one record per narrated segment.

Expected layout under ``root``::

    annotations/EPIC_100_{train,validation}.csv, EPIC_100_{verb,noun}_classes.csv
    annotations/EPIC_100_video_info.csv                     (optional: each video's fps)
    P01/videos/P01_01.MP4, ...                              frames="video" (the default)
    P01/rgb_frames/P01_01/frame_0000000001.jpg, ...         frames="rgb_frames": the released JPEG frames

The real test labels are hidden (``EPIC_100_test_timestamps.csv`` has no classes), so ``split="test"``
reads the validation file, as is usual for EPIC-KITCHENS-100 results outside the challenge server.
"""

from __future__ import annotations

from pathlib import Path

from vivit.data.annotations import names_by_index, read_csv
from vivit.data.records import VideoRecord, usable_records

LAYOUT = (  # for messages about a root that is not laid out so
    "annotations/EPIC_100_{train,validation,verb_classes,noun_classes}.csv; videos <participant>/videos/"
    "<video_id>.MP4 (or frames <participant>/rgb_frames/<video_id>/frame_0000000001.jpg)"
)
FRAMES = {"video": "videos", "rgb_frames": "rgb_frames"}  # frames= -> the folder under P01/
SPLIT_FILES = {"train": "EPIC_100_train.csv", "val": "EPIC_100_validation.csv", "test": "EPIC_100_validation.csv"}
_REQUIRED = ("narration_id", "participant_id", "video_id", "start_frame", "stop_frame", "verb_class", "noun_class")


def read_epic_kitchens_class_names(root: str | Path) -> dict[str, list[str]]:
    """``{"verb": [...], "noun": [...]}``: class keys indexed by class id, from the class CSVs."""
    names = {}
    for kind in ("verb", "noun"):
        path = Path(root) / "annotations" / f"EPIC_100_{kind}_classes.csv"
        names[kind] = names_by_index(((row["key"], row["id"]) for row in read_csv(path, ("id", "key"))), path)
    return names


def video_fps(root: str | Path) -> dict[str, float]:
    """Video id -> frames per second, from ``EPIC_100_video_info.csv``; empty when the file is absent."""
    path = Path(root) / "annotations" / "EPIC_100_video_info.csv"
    return {row["video_id"]: float(row["fps"]) for row in read_csv(path, ("video_id", "fps"))} if path.is_file() else {}


def read_epic_kitchens_100(
    root: str | Path, split: str, frames: str = "video", strict: bool = False
) -> list[VideoRecord]:
    """Segments of ``split`` ("train", "val" or "test" = validation) whose video exists.

    EPIC's 1-based, inclusive ``start_frame``/``stop_frame`` become 0-based ``start`` and exclusive ``stop``,
    in the ``.MP4`` (``frames="video"``) or in its folder of frames (``"rgb_frames"``), whose file
    ``frame_{n:010d}.jpg`` is frame n: both give the same frames. A video's fps is the one in
    ``EPIC_100_video_info.csv``, or else the rate its frame numbers count (§4.2): 50 for the EK-100
    extension's ``PXX_1YY`` ids, 60 for EPIC-55's ``PXX_YY``. Rows with a missing video or a class id outside
    the class tables are reported and left out, as by the other readers (:func:`usable_records`; ``strict``:
    an unknown class id raises).
    """
    root = Path(root)
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    if frames not in FRAMES:
        raise ValueError(f"frames must be one of {sorted(FRAMES)}, got {frames!r}")
    path = root / "annotations" / SPLIT_FILES[split]
    rows = read_csv(path, _REQUIRED)
    num_classes = {kind: len(names) for kind, names in read_epic_kitchens_class_names(root).items()}
    fps = video_fps(root)

    records, unknown = [], []
    for row in rows:
        values = {kind: row[f"{kind}_class"].strip() for kind in num_classes}
        if bad := [f"{k}_class={v}" for k, v in values.items() if not (v.isdigit() and int(v) < num_classes[k])]:
            unknown.append((row["narration_id"], ", ".join(bad)))
            continue
        labels = {kind: int(value) for kind, value in values.items()}
        start, stop = int(row["start_frame"]) - 1, int(row["stop_frame"])
        if stop <= max(start, 0):
            raise ValueError(f"{path}: row {row['narration_id']}: stop_frame {stop} is before start_frame {start + 1}")
        video_id = row["video_id"]
        video = root / row["participant_id"] / FRAMES[frames] / (f"{video_id}.MP4" if frames == "video" else video_id)
        rate = fps.get(video_id) or (50.0 if len(video_id.rpartition("_")[2]) == 3 else 60.0)
        records.append(VideoRecord(video, max(start, 0), stop, labels, row["narration_id"], fps=rate))
    return usable_records(records, unknown, path, root, strict)
