"""HMDB-51 (https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/): one record per video,
the whole file.

Expected layout under ``root``, as released (the split files of test_train_splits.rar, the videos of
hmdb51_org.rar, whose one .rar per class unpacks to its class folder)::

    testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt    "<name>.avi <0|1|2>" lines, one per video of the class
    hmdb51/<class>/<name>.avi

In split N, a video marked 1 is for training, 2 for testing and 0 unused; a video in no split file is not used.
pytorchvideo (``Hmdb51LabeledVideoPaths.from_csvs``) reads the split files: the class is the file's name before
``_test_split``. The class index is the position in the sorted class names (those of the split files, which are
the video folders' names). ``official_split`` (``data.split``) picks the split files: training reads the videos
marked 1, validation and testing those marked 2.
"""

from __future__ import annotations

import re
from pathlib import Path

from vivit.data.annotations import whole_video_records
from vivit.data.official_splits import VideoFolder, check_official_split, parsed_by_pytorchvideo, part_of
from vivit.data.records import VideoRecord

LAYOUT = (  # for messages about a root that is not laid out so
    "testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt with '<name>.avi <0|1|2>' lines; "
    "videos hmdb51/<class>/<name>.avi"
)
SPLIT_FILES = "testTrainMulti_7030_splits"
VIDEO_FOLDER = "hmdb51"
SPLIT_FILE = re.compile(r"(.+)_test_split([123])\.txt")  # -> class, official split


def split_files(root: Path, official_split: int | None = None) -> dict[str, Path]:
    """Class -> its split file of ``official_split`` (None: the classes of any split), sorted by class."""
    folder = root / SPLIT_FILES
    if not folder.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {folder}")
    files = {}
    for path in sorted(folder.iterdir()):
        if (match := SPLIT_FILE.fullmatch(path.name)) and (official_split in (None, int(match[2]))):
            files.setdefault(match[1], path)
    if not files:
        split = "N" if official_split is None else official_split
        raise FileNotFoundError(f"annotation files not found: no <class>_test_split{split}.txt in {folder}")
    return dict(sorted(files.items()))


def read_hmdb51_class_names(root: str | Path) -> dict[str, list[str]]:
    """``{"label": [...]}``: the class names of the split files, sorted."""
    return {"label": list(split_files(Path(root)))}


def _split_line(line: str) -> bool:
    """A split file line that pytorchvideo reads: a video's name and its mark."""
    fields = line.split()
    return len(fields) == 2 and fields[1] in ("0", "1", "2")


def read_hmdb51(root: str | Path, split: str, official_split: int = 1, strict: bool = False) -> list[VideoRecord]:
    """Videos of ``split`` ("train": those marked 1 in the split files of ``official_split``; "val" and "test":
    those marked 2); rows whose video is missing are reported and left out."""
    from pytorchvideo.data.hmdb51 import Hmdb51LabeledVideoPaths

    root = Path(root)
    part = part_of(split)
    files = split_files(root, check_official_split(official_split))
    if missing := sorted(set(read_hmdb51_class_names(root)["label"]) - set(files)):
        raise FileNotFoundError(
            f"annotation file not found: {root / SPLIT_FILES / f'{missing[0]}_test_split{official_split}.txt'} "
            f"({len(missing)} classes have no split {official_split} file)"
        )
    listed = parsed_by_pytorchvideo(
        lambda paths: Hmdb51LabeledVideoPaths.from_csvs(paths, part),
        list(files.values()),
        _split_line,
        "'<name>.avi <0|1|2>'",
    )
    videos = VideoFolder(root / VIDEO_FOLDER)
    items = []
    for i in range(len(listed)):
        relative, labels = listed[i]
        items.append((relative, labels["label"], videos.find(relative)))
    source = root / SPLIT_FILES / f"*_test_split{official_split}.txt"
    return whole_video_records(items, list(files), source, root, strict=strict)
