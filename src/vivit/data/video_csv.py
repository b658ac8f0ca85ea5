"""A custom dataset of whole video files, in either of two layouts under ``root``::

    train.csv, val.csv, test.csv     header path,label; path relative to root (any folders), label a class name
    train/<class>/<video>.mp4, val/<class>/<video>.mp4, test/<class>/<video>.mp4    (used when there is no train.csv)

Videos may be .mp4, .webm, .mkv, .avi or .mov, or folders of their frames as JPEG files numbered from 1
(e.g. ``frames/<id>/<id>_000001.jpg``, as SlowFast extracts them): a path (or ``<video>`` above) that is
a folder. The CSVs may have an ``fps`` column, the video's frame rate, which ``data.target_fps`` needs
for a folder of frames. The classes are the training labels (or the class folders of ``train/``),
sorted as strings: index = position in that list.
"""

from __future__ import annotations

from pathlib import Path

from vivit.data.annotations import read_csv, video_files, whole_video_records
from vivit.data.records import VideoRecord

LAYOUT = (  # for messages about a root that is not laid out so
    "{train,val,test}.csv with a path,label header (paths relative to the root), or class folders "
    "{train,val,test}/<class>/<video>"
)
SPLITS = ("train", "val", "test")


def _items(root: Path, split: str) -> tuple[Path, list[tuple[str, str, Path]], dict[str, float]]:
    """The split's source (CSV file or folder), its ``(name, label, video path)`` items and the fps of those
    whose CSV row gives one."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if (root / "train.csv").is_file():
        source = root / f"{split}.csv"
        rows = read_csv(source, ("path", "label"))
        fps = {row["path"]: _fps(row["fps"], source, row["path"]) for row in rows if (row.get("fps") or "").strip()}
        return source, [(row["path"], row["label"], root / row["path"]) for row in rows], fps
    source = root / split
    if not source.is_dir():
        raise FileNotFoundError(f"neither {root / 'train.csv'} nor the class folders {source}/<class>/ exist")
    return source, [(str(p.relative_to(root)), p.parent.name, p) for p in video_files(source, depth=2)], {}


def _fps(text: str, source: Path, name: str) -> float:
    try:
        if (fps := float(text)) > 0:
            return fps
    except ValueError:
        pass
    raise ValueError(f"{source}: row {name}: fps={text!r} is not a number > 0")


def read_video_csv_class_names(root: str | Path) -> dict[str, list[str]]:
    """``{"label": [...]}``: the sorted training labels."""
    _, items, _ = _items(Path(root), "train")
    return {"label": sorted({label for _, label, _ in items})}


def read_video_csv(root: str | Path, split: str, strict: bool = False) -> list[VideoRecord]:
    """Videos of ``split`` ("train", "val" or "test"); missing files and unknown labels are reported and left
    out (``strict``: an unknown label raises)."""
    root = Path(root)
    source, items, fps = _items(root, split)
    return whole_video_records(items, read_video_csv_class_names(root)["label"], source, root, fps, strict)
