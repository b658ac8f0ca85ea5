"""UCF-101 (https://www.crcv.ucf.edu/data/UCF101.php): one record per video, the whole file.

Expected layout under ``root``, as released (the lists of UCF101TrainTestSplits-RecognitionTask.zip, the videos
of UCF101.rar)::

    ucfTrainTestlist/classInd.txt             "<index> <Class>" lines, index 1..101
    ucfTrainTestlist/trainlist0{1,2,3}.txt    "<Class>/v_<Class>_gXX_cYY.avi <index>" lines (index as classInd's)
    ucfTrainTestlist/testlist0{1,2,3}.txt     "<Class>/v_<Class>_gXX_cYY.avi" lines, no index
    UCF-101/<Class>/v_<Class>_gXX_cYY.avi     (or UCF101/<Class>/...)

pytorchvideo (``LabeledVideoPaths.from_csv``) reads the lists. A video's class is its folder's, looked up in
classInd.txt; the framework's class index is classInd's minus 1. A trainlist's index must name the same class.
The files have CRLF line endings; a listed video whose file differs in case (the release lists
``HandstandPushups/v_HandStandPushups_g01_c01.avi``; copies differ) is looked up in any case. ``official_split``
(``data.split``) picks the lists: training reads the trainlist, validation and testing the testlist.
"""

from __future__ import annotations

from pathlib import Path

from vivit.data.annotations import names_by_index, read_csv, whole_video_records
from vivit.data.official_splits import VideoFolder, check_official_split, parsed_by_pytorchvideo, part_of
from vivit.data.records import VideoRecord

LAYOUT = (  # for messages about a root that is not laid out so
    "ucfTrainTestlist/{classInd.txt, trainlist0N.txt, testlist0N.txt}; videos UCF-101/<Class>/v_<Class>_gXX_cYY.avi "
    "(or UCF101/<Class>/...)"
)
LISTS = "ucfTrainTestlist"
CLASS_INDEX = "classInd.txt"
VIDEO_FOLDERS = ("UCF-101", "UCF101")  # as UCF101.rar unpacks, and a common renaming


def read_ucf101_class_names(root: str | Path) -> dict[str, list[str]]:
    """``{"label": [...]}``: the classes of classInd.txt, by their index there (1-based) minus 1."""
    path = Path(root) / LISTS / CLASS_INDEX
    rows = read_csv(path, fieldnames=("index", "name"), delimiter=" ")
    pairs = [(row["name"], int(row["index"]) - 1 if row["index"].isdigit() else row["index"]) for row in rows]
    return {"label": names_by_index(pairs, path)}


def video_folder(root: Path) -> Path:
    """``root/UCF-101``, else ``root/UCF101`` when only that exists."""
    return next((root / name for name in VIDEO_FOLDERS if (root / name).is_dir()), root / VIDEO_FOLDERS[0])


def _list_line(line: str) -> bool:
    """A list line that pytorchvideo reads: a path, and in a trainlist its class index."""
    fields = line.split()
    return len(fields) == 1 or (len(fields) == 2 and fields[1].isdigit())


def read_ucf101(root: str | Path, split: str, official_split: int = 1, strict: bool = False) -> list[VideoRecord]:
    """Videos of ``split`` ("train": the trainlist of ``official_split``; "val" and "test": its testlist); rows
    whose video is missing or whose folder is not a class are reported and left out (``strict``: the latter
    raise). A trainlist index that names another class than the video's folder raises, naming the row."""
    from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths

    root = Path(root)
    part = part_of(split)
    path = root / LISTS / f"{part}list{check_official_split(official_split):02d}.txt"
    listed = parsed_by_pytorchvideo(
        lambda paths: LabeledVideoPaths.from_csv(str(paths[0])), [path], _list_line, "'<Class>/<video>.avi [<index>]'"
    )
    class_names = read_ucf101_class_names(root)["label"]
    classes = {name.lower(): name for name in class_names}
    videos = VideoFolder(video_folder(root))
    items = []
    for i in range(len(listed)):
        relative, labels = listed[i]
        folder = relative.replace("\\", "/").split("/")[0]
        label, index = classes.get(folder.lower(), folder), labels["label"]
        if index != -1 and not (1 <= index <= len(class_names) and class_names[index - 1] == label):
            named = f"class {class_names[index - 1]!r}" if 1 <= index <= len(class_names) else "no class"
            raise ValueError(
                f"{path}: row {relative}: index {index} is {named} in {CLASS_INDEX}, not the class of its folder "
                f"{folder!r}"
            )
        items.append((relative, label, videos.find(relative)))
    return whole_video_records(items, class_names, path, root, strict=strict)
