"""Something-Something v2 (dataset_formats.md §2): one record per video, the whole file.

Expected layout under ``root``, with the 20BN names or the shorter ones of the Qualcomm release::

    labels/something-something-v2-labels.json      (or labels.json)      {"<template>": "<class index>", ...}
    labels/something-something-v2-train.json       (or train.json)       [{"id", "label", "template", "placeholders"}]
    labels/something-something-v2-validation.json  (or validation.json)
    labels/something-something-v2-test.json        (or test.json)        [{"id"}], labelled by
    labels/test-answers.csv                                              id;<template> lines, no header
    20bn-something-something-v2/<id>.webm          (or <id>.mp4, as the OpenDataLab copy)

The class is the entry's ``template`` with its ``[`` and ``]`` removed, looked up in the labels file; the
``label`` field is the filled-in caption, not the class.
"""

from __future__ import annotations

from pathlib import Path

from vivit.data.annotations import (
    UnlabelledSplitError,
    find_file,
    index_videos,
    names_by_index,
    read_csv,
    read_json,
    whole_video_records,
)
from vivit.data.records import VideoRecord

LAYOUT = (  # for messages about a root that is not laid out so
    "labels/something-something-v2-{labels,train,validation,test}.json (or labels.json, train.json, "
    "validation.json, test.json), labels/test-answers.csv; videos 20bn-something-something-v2/<id>.webm (or .mp4)"
)
LABEL_FILES = {
    "labels": ("something-something-v2-labels.json", "labels.json"),
    "train": ("something-something-v2-train.json", "train.json"),
    "val": ("something-something-v2-validation.json", "validation.json"),
    "test": ("something-something-v2-test.json", "test.json"),
}
TEST_ANSWERS = "test-answers.csv"
VIDEO_DIR = "20bn-something-something-v2"


def read_ssv2_class_names(root: str | Path) -> dict[str, list[str]]:
    """``{"label": [...]}``: the bracket-free templates, indexed by the class index of the labels file."""
    path = find_file(Path(root) / "labels", LABEL_FILES["labels"])
    table = read_json(path)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected an object mapping template to class index")
    return {"label": names_by_index(table.items(), path)}


def _templates(root: Path, split: str) -> tuple[Path, list[tuple[str, str]]]:
    """The annotation file of ``split`` and its ``(id, bracket-free template)`` pairs."""
    path = find_file(root / "labels", LABEL_FILES[split])
    entries = read_json(path)
    key = "id" if split == "test" else "template"
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or key not in entry:
            raise ValueError(f"{path}: entry {i} has no {key!r}: {entry!r}")
    ids = [str(entry["id"]) for entry in entries]  # some copies store ids as numbers
    if split != "test":
        return path, [(i, entry["template"].replace("[", "").replace("]", "")) for i, entry in zip(ids, entries)]
    answers_path = root / "labels" / TEST_ANSWERS
    if not answers_path.is_file():
        raise UnlabelledSplitError(f"{path} lists the test videos, but their labels, {answers_path}, are missing")
    rows = read_csv(answers_path, fieldnames=("id", "template"), delimiter=";")
    answers = {row["id"]: row["template"] for row in rows}
    if unanswered := [i for i in ids if i not in answers]:
        raise ValueError(f"{answers_path}: no answer for the test ids {unanswered[:5]} of {path}")
    return path, [(i, answers[i]) for i in ids]


def read_ssv2(root: str | Path, split: str, strict: bool = False) -> list[VideoRecord]:
    """Videos of ``split`` ("train", "val" or "test"); rows with a missing file or unknown template are reported
    and left out (``strict``: an unknown template raises)."""
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be one of ['test', 'train', 'val'], got {split!r}")
    path, pairs = _templates(root, split)
    videos = index_videos(root / VIDEO_DIR)
    items = [(i, template, videos.get(i, root / VIDEO_DIR / f"{i}.webm")) for i, template in pairs]
    return whole_video_records(items, read_ssv2_class_names(root)["label"], path, root, strict=strict)
