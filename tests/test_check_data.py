"""src/check_data.py: every bad row and video of a dataset is reported with its file, rows and problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from helpers import compose_config, ramp, run_script, write_bad_video, write_cut_video, write_frame_folder
from test_datasets import UNKNOWN_VERB, write_epic_kitchens, write_kinetics, write_text, write_video_csv
from vivit.data.check import check_data, run
from vivit.data.moving_digits import write_video

# The custom-CSV fixture's train.csv gets one row per bad video (dataset_formats.md §8.1); its val.csv already
# has a missing video and an unknown label. Clips of 4 frames at stride 2 span 7 of the fixture's 16 frames.
BAD = {  # video under root -> the problem reported
    "bad/random.mp4": "InvalidDataError",
    "bad/truncated.mp4": "InvalidDataError",
    "bad/empty.mp4": "InvalidDataError",
    "bad/no_video.mp4": "no video stream",
    "bad/no_frames.avi": "the video stream has no frames",
    "bad/gap": "frame 5, ",  # the folder's frame_0000000006.jpg is missing
    "bad/cut.webm": "it ends early: its ",  # cut short: some of the frames its header declares (not a note)
}
CUSTOM = ["data=video_csv", "data.heads.label=3", "data.num_frames=4", "data.stride=2"]
EPIC = ["data=epic_kitchens_100", "data.heads.verb=3", "data.heads.noun=3", "data.num_classes=6"]


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check") / "custom"
    write_video_csv(root)
    for name in BAD:
        kind = Path(name).stem
        if kind == "gap":  # a folder of JPEG frames without its frame 5
            write_frame_folder(root / name, ramp())
            (root / name / "frame_0000000006.jpg").unlink()
        elif kind == "cut":
            write_cut_video(root / name, 0.55, noise=True)
        else:
            write_bad_video(root / name, kind, root / "clips/cat/a.mp4")
    write_video(root / "bad/short.mp4", np.zeros((4, 32, 32, 3), dtype=np.uint8), 30)
    with open(root / "train.csv", "a") as f:
        f.writelines(f"{name},cat\n" for name in [*BAD, "bad/short.mp4"])
    return root


def _cfg(root: Path, tmp_path: Path, *overrides: str, data: list[str] = CUSTOM):
    return compose_config("check_data", [*data, f"data.root={root}", *overrides], tmp_path)


def _problems(report) -> list[tuple]:
    """(split, file relative to the root, rows, problem, severity) of each problem, in the report's order."""
    root = Path(report.root)
    return [(p.split, str(Path(p.file).relative_to(root)), p.rows, p.problem, p.severity) for p in report.problems]


def _pop(problems: list[tuple], split: str, file: str, text: str) -> tuple:
    """Removes and returns (rows, problem, severity) of the one problem of ``split`` and ``file`` with ``text``."""
    (found,) = [p for p in problems if p[:2] == (split, file) and text in p[3]]
    problems.remove(found)
    return found[2:]


def test_every_bad_row_and_video_is_reported(custom: Path, tmp_path: Path) -> None:
    report = check_data(instantiate(_cfg(custom, tmp_path).data), workers=0)
    problems = _problems(report)
    for name, problem in BAD.items():
        assert _pop(problems, "train", name, problem)[::2] == ((name,), "error"), name
    assert _pop(problems, "train", "bad/short.mp4", "") == (
        ("bad/short.mp4",),
        "the video has 4 frames, fewer than the 7 of 4 at stride 2: clips repeat frames",
        "note",  # clips loop
    )
    assert _pop(problems, "val", "clips/missing.mp4", "") == (
        ("clips/missing.mp4",),
        f"video is missing (row of {custom / 'val.csv'})",
        "error",
    )
    assert _pop(problems, "val", "val.csv", "label 'fish' is not a class")[::2] == (("clips/j.mp4",), "error")
    assert problems == []
    assert report.failed and [p.severity for p in report.problems] == ["error"] * 9 + ["note"]
    assert report.splits == {
        "train": dict(rows=14, dropped=0, videos=14, unreadable=7, notes=1),
        "val": dict(rows=5, dropped=2, videos=3, unreadable=0, notes=0),
        "test": dict(rows=2, dropped=0, videos=2, unreadable=0, notes=0),
    }
    frames = {Path(v["file"]).name: v["frames"] for v in report.videos}
    assert frames["a.mp4"] == 16 and frames["short.mp4"] == 4 and frames["random.mp4"] is None


def test_a_clean_split_passes_and_is_written_out(custom: Path, tmp_path: Path) -> None:
    assert run(_cfg(custom, tmp_path, "splits=[test]", "workers=0", f"out={tmp_path / 'report'}")) == 0
    report = json.loads((tmp_path / "report" / "check_data.json").read_text())
    assert report["failed"] is False and report["problems"] == [] and list(report["splits"]) == ["test"]
    assert "| test | 2 | 0 | 2 | 0 | 0 |" in (tmp_path / "report" / "check_data.md").read_text()


def test_short_videos_at_the_target_frame_rate(custom: Path, tmp_path: Path) -> None:
    """data.target_fps=15 halves the fixture's 30 fps videos: 16 frames give 8 (a clip spans 7), 4 give 2."""
    cfg = _cfg(custom, tmp_path, "data.target_fps=15")
    report = check_data(instantiate(cfg.data), splits=["test", "train"], workers=0)
    notes = [(Path(p.file).name, p.problem) for p in report.problems if p.severity == "note"]
    assert notes == [
        ("short.mp4", "the video has 4 frames (2 at 15 fps), fewer than the 7 of 4 at stride 2: clips repeat frames")
    ]


def test_segments_past_the_end_and_short_segments(tmp_path: Path) -> None:
    root = tmp_path / "epic"
    write_epic_kitchens(root)
    with open(root / "annotations" / "EPIC_100_train.csv", "a") as f:  # 40 frames of a 16-frame video
        f.write("P01_01_9,P01,P01_01,00:00:00.000,00:00:00.00,00:00:00.66,1,40,take tap,take,0,tap,0,['tap'],[0]\n")
    cfg = _cfg(root, tmp_path, "data.num_frames=4", "data.stride=3", data=EPIC)
    problems = _problems(check_data(instantiate(cfg.data), workers=0))
    assert _pop(problems, "train", "P01/videos/P01_01.MP4", "segment 0-40") == (
        ("P01_01_9",),
        "segment 0-40 ends after the last frame (16 frames)",
        "error",
    )
    missing = f"video is missing (row of {root / 'annotations/EPIC_100_validation.csv'})"
    for split in ("val", "test"):  # EPIC's test split is its validation set
        assert _pop(problems, split, "P09/videos/P09_01.MP4", "") == (("P09_01_0",), missing, "error")
    # 4 frames at stride 3 span 10 frames: the 7- and 8-frame training segments loop, the 10- and 13-frame ones do not
    assert problems == [
        ("train", "P01/videos/P01_01.MP4", ("P01_01_0",), f"segment 0-7 has 7 frames, {SHORT}", "note"),
        ("train", "P01/videos/P01_01.MP4", ("P01_01_1",), f"segment 8-15 has 7 frames, {SHORT}", "note"),
        ("train", "P01/videos/P01_101.MP4", ("P01_101_0",), f"segment 0-8 has 8 frames, {SHORT}", "note"),
        ("train", "P01/videos/P01_101.MP4", ("P01_101_1",), f"segment 9-16 has 7 frames, {SHORT}", "note"),
    ]


SHORT = "fewer than the 10 of 4 at stride 3: clips repeat frames"


def test_unreadable_annotations_and_class_counts_are_reported(custom: Path, tmp_path: Path) -> None:
    report = check_data(instantiate(_cfg(custom, tmp_path, "data.heads.label=5").data), splits=["val"], workers=0)
    assert report.problems[0].split == "all" and "data.heads.label=5, but the dataset" in report.problems[0].problem
    write_text(tmp_path / "empty" / "README", "no annotations")  # a root that is no dataset: one message, no report
    with pytest.raises(InstantiationException, match=r"neither .*train.csv nor .* Expected under data.root: "):
        instantiate(_cfg(tmp_path / "empty", tmp_path).data)


def test_command_line_uses_a_process_pool_and_exits_non_zero(custom: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = [*CUSTOM, f"data.root={custom}", "workers=2", f"out={out}", f"hydra.run.dir={tmp_path / 'run'}"]
    done = run_script("check_data", *args, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "| error | train |" in done.stdout and "bad/no_video.mp4 | no video stream |" in done.stdout
    report = json.loads((out / "check_data.json").read_text())
    expected = check_data(instantiate(_cfg(custom, tmp_path).data), workers=0)
    assert report["problems"] == json.loads(expected.to_json())["problems"]


def test_epic_unknown_class_id_and_bad_videos_in_one_pass(tmp_path: Path) -> None:
    """Issue 17.21: a row with an unknown verb class no longer hides the damaged videos after it (even with
    data.annotations.strict=true, which makes training stop at the row, the check lists everything)."""
    root = tmp_path / "epic"
    write_epic_kitchens(root)
    with open(root / "annotations" / "EPIC_100_train.csv", "a") as f:
        f.write(UNKNOWN_VERB + "\n")
    write_bad_video(root / "P01/videos/P01_101.MP4", "truncated", root / "P01/videos/P01_01.MP4")
    cfg = _cfg(root, tmp_path, "data.annotations.strict=true", data=["data=epic_kitchens_100"])
    problems = _problems(check_data(instantiate(cfg.data), splits=["train"], workers=0))
    source = root / "annotations" / "EPIC_100_train.csv"
    assert _pop(problems, "train", "annotations/EPIC_100_train.csv", "") == (
        ("P01_01_8",),
        f"label 'verb_class=3' is not a class (row of {source})",
        "error",
    )
    rows, problem, severity = _pop(problems, "train", "P01/videos/P01_101.MP4", "InvalidDataError")
    assert rows == ("P01_101_0", "P01_101_1") and severity == "error"


def test_a_missing_test_split_is_a_note_when_testing_reads_val(tmp_path: Path) -> None:
    """Issue 17.23: a Kinetics copy without test.csv passes the check when data.eval_split=auto tests on val."""
    root = tmp_path / "kinetics"
    write_kinetics(root)
    (root / "annotations" / "test.csv").unlink()
    kinetics = ["data=kinetics400", "data.heads.label=3", "data.num_classes=3"]
    report = check_data(instantiate(_cfg(root, tmp_path, data=kinetics).data), splits=["test"], workers=0)
    assert not report.failed and [(p.split, p.severity) for p in report.problems] == [("test", "note")]
    assert report.problems[0].problem.endswith("testing reads the validation split (data.eval_split=auto)")
    strict = _cfg(root, tmp_path, "data.eval_split=test", data=kinetics)
    assert check_data(instantiate(strict.data), splits=["test"], workers=0).failed
