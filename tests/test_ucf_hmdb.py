"""UCF-101 and HMDB-51 (data=ucf101, data=hmdb51, data.split=1|2|3) on tiny, format-exact copies written here:
AVI files (MPEG-4 Part 2 tagged XVID, and H.264), the released list and split files with their quirks (CRLF line
endings, blank lines, trailing spaces, UCF-101's file names in another case than its lists), a listed video that
is missing and a video in no split."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from helpers import TINY_NET, compose_config, ramp, run_script, write_bad_video
from vivit.data import hmdb51, read_hmdb51, read_hmdb51_class_names, read_ucf101, read_ucf101_class_names, ucf101
from vivit.data.check import check_data
from vivit.data.decoding import count_frames, decode_frames
from vivit.pipeline import evaluate, train

FRAMES = 8  # per video: ramp()'s grey levels, frame i at 4 + 6 i


def write_avi(path: Path, frames: np.ndarray, fps: int, codec: str) -> None:
    """``frames`` (T, H, W, 3) uint8 as an AVI file: ``mpeg4`` (MPEG-4 Part 2, tagged XVID, with B-frames, as
    UCF-101's and HMDB-51's XviD/DivX files) or ``libx264`` (H.264), a keyframe every 12 frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1  # byte-identical output across runs and machines
        if codec == "mpeg4":
            stream.codec_context.codec_tag = "XVID"
            stream.codec_context.qscale, stream.codec_context.gop_size, stream.codec_context.max_b_frames = 2, 12, 2
        else:
            stream.options = {"crf": "15", "preset": "fast", "g": "12"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _frame_numbers(frames: np.ndarray) -> list[int]:
    return [round((level - 4) / 6) for level in frames.astype(float).mean(axis=(1, 2, 3))]


def write_lines(path: Path, lines: list[str], end: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(f"{line}{end}" for line in lines).encode())


# ---------------------------------------------------------------------------------------------- UCF-101

UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]  # classInd.txt's order: 1, 2, 3
# (class, group, clip): the test list of split k holds group k (the release's: groups 1-7, 8-14, 15-21)
UCF_VIDEOS = [(c, g, 1) for c in UCF_CLASSES for g in (1, 2, 3)] + [("ApplyEyeMakeup", 1, 2)]
UCF_MISSING = ("Archery", 3, 2)  # listed (split 3 tests it, splits 1 and 2 train on it), no file
UCF_UNLISTED = ("ApplyEyeMakeup", 4, 1)  # a file in no list


def ucf_listed(video: tuple[str, int, int]) -> str:
    """A video as the lists name it; the release's lists spell HandstandPushups' files v_HandStandPushups_*."""
    name, group, clip = video
    return f"{name}/v_{name.replace('Handstand', 'HandStand')}_g{group:02d}_c{clip:02d}.avi"


def write_ucf101(root: Path) -> None:
    lists = root / "ucfTrainTestlist"
    write_lines(lists / "classInd.txt", [f"{i} {name}" for i, name in enumerate(UCF_CLASSES, 1)], "\r\n")
    for split in (1, 2, 3):
        videos = [*UCF_VIDEOS, UCF_MISSING]
        train = [f"{ucf_listed(v)} {UCF_CLASSES.index(v[0]) + 1}" for v in videos if v[1] != split]
        test = [ucf_listed(v) for v in videos if v[1] == split]
        if split == 2:
            train.insert(2, "")  # a blank line
        write_lines(lists / f"trainlist0{split}.txt", train, "\r\n")
        write_lines(lists / f"testlist0{split}.txt", [*test, ""], "\r\n")  # a blank line at the end
    for i, video in enumerate([*UCF_VIDEOS, UCF_UNLISTED]):
        path = root / "UCF-101" / ucf_listed(video)
        if video == ("HandstandPushups", 2, 1):  # this copy's file differs in case from the lists
            path = path.with_name(path.name.replace("HandStand", "Handstand"))
        write_avi(path, ramp(FRAMES), 25, ("mpeg4", "libx264")[i % 2])


def ucf_expected(split: int) -> dict[str, dict[str, int]]:
    """What the reader must return for official split ``split``: listed name -> class, for train and test."""
    parts = {"train": [v for v in UCF_VIDEOS if v[1] != split], "test": [v for v in UCF_VIDEOS if v[1] == split]}
    return {part: {ucf_listed(v): UCF_CLASSES.index(v[0]) for v in videos} for part, videos in parts.items()}


# ---------------------------------------------------------------------------------------------- HMDB-51

HMDB_CLASSES = ["brush_hair", "cartwheel", "sword_exercise"]  # sorted
HMDB_VIDEOS = {  # class -> its videos' names, as the release names them (tags after the class)
    name: [f"{prefix}_{name}_{tags}_{i}.avi" for i, (prefix, tags) in enumerate(takes)]
    for name, takes in {
        "brush_hair": [("April_09", "u_nm_np1_ba_goo"), ("Blonde_being_brushed", "h_cm_np2_ri_med")] * 2,
        "cartwheel": [("Bodenturnen_2004", "f_cm_np1_le_med"), ("Cartwheel_Competition!", "f_cm_np1_ri_bad")] * 2,
        "sword_exercise": [("Sword_Exercise_Training", "f_cm_np1_le_med"), ("#20_Rhythm_clean", "u_nm_np1_fr_goo")] * 2,
    }.items()
}
HMDB_MISSING = "Missing_Video_brush_hair_f_nm_np1_fr_med_9.avi"  # in brush_hair's split files, no file
HMDB_UNLISTED = "cartwheel/Not_In_Any_Split_cartwheel_f_cm_np1_ri_med_0.avi"


def hmdb_mark(split: int, i: int) -> int:
    """The mark of a class's video ``i`` in split ``split``: 2 (test) for video split-1, 0 (unused) for video 3
    in split 1, else 1 (train)."""
    return 2 if i == split - 1 else 0 if (i, split) == (3, 1) else 1


def write_hmdb51(root: Path) -> None:
    for split in (1, 2, 3):
        for name, videos in HMDB_VIDEOS.items():
            lines = [f"{video} {hmdb_mark(split, i)} " for i, video in enumerate(videos)]  # trailing spaces
            if name == "brush_hair":
                lines.append(f"{HMDB_MISSING} {2 if split == 1 else 1} ")
            end = "\r\n" if name == "cartwheel" else "\n"
            write_lines(root / "testTrainMulti_7030_splits" / f"{name}_test_split{split}.txt", lines, end)
    files = [f"{name}/{video}" for name, videos in HMDB_VIDEOS.items() for video in videos] + [HMDB_UNLISTED]
    for i, relative in enumerate(files):
        write_avi(root / "hmdb51" / relative, ramp(FRAMES), 30, ("libx264", "mpeg4")[i % 2])


def hmdb_expected(split: int) -> dict[str, dict[str, int]]:
    marks = {"train": 1, "test": 2}
    return {
        part: {
            f"{name}/{video}": HMDB_CLASSES.index(name)
            for name, videos in HMDB_VIDEOS.items()
            for i, video in enumerate(videos)
            if hmdb_mark(split, i) == mark
        }
        for part, mark in marks.items()
    }


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("official_splits")
    write_ucf101(base / "ucf101")
    write_hmdb51(base / "hmdb51")
    return {"ucf101": base / "ucf101", "hmdb51": base / "hmdb51"}


READERS = {"ucf101": (read_ucf101, read_ucf101_class_names), "hmdb51": (read_hmdb51, read_hmdb51_class_names)}
EXPECTED = {"ucf101": (UCF_CLASSES, ucf_expected), "hmdb51": (HMDB_CLASSES, hmdb_expected)}
SMALL = ["data.num_frames=4", "data.stride=2", "data.crop_size=32", "data.min_resize=null", "data.batch_size=2"]
SMALL += ["data.num_workers=0"]


def _data_cfg(name: str, root: Path, tmp_path: Path, *overrides: str, config: str = "train"):
    heads = [f"data.heads.label={len(EXPECTED[name][0])}", f"data.num_classes={len(EXPECTED[name][0])}"]
    return compose_config(config, [f"data={name}", f"data.root={root}", *heads, *SMALL, *overrides], tmp_path)


# ---------------------------------------------------------------------------------------------- tests


def test_avi_files_decode_and_seek_frame_exactly(tmp_path: Path) -> None:
    """The framework's decoder on AVI: XviD-like MPEG-4 Part 2 with B-frames, and H.264: every frame, and frames
    after a seek past the first keyframes, are the frames written."""
    for codec in ("mpeg4", "libx264"):
        path = tmp_path / f"{codec}.avi"
        write_avi(path, ramp(), 25, codec)
        assert count_frames(path) == 40
        assert _frame_numbers(decode_frames(path, list(range(40)))) == list(range(40)), codec
        assert _frame_numbers(decode_frames(path, [25, 27, 29, 31, 33])) == [25, 27, 29, 31, 33], codec
        assert _frame_numbers(decode_frames(path, [3, 5, 7])) == [3, 5, 7], codec


@pytest.mark.parametrize("split", [1, 2, 3])
@pytest.mark.parametrize("name", ["ucf101", "hmdb51"])
def test_class_maps_and_split_membership_follow_the_official_rules(name: str, split: int, roots, caplog) -> None:
    """Every split's train and test videos with their classes (UCF-101: classInd.txt's index minus 1; HMDB-51: the
    sorted class names); validation reads the test videos; the listed video without a file is reported and left
    out; the video in no split is in none."""
    read, read_class_names = READERS[name]
    classes, expected = EXPECTED[name]
    root = roots[name]
    assert read_class_names(root) == {"label": classes}
    with caplog.at_level(logging.WARNING):
        records = {part: read(root, part, official_split=split) for part in ("train", "val", "test")}
    for part, wanted in expected(split).items():
        assert {r.name: r.labels for r in records[part]} == {n: {"label": k} for n, k in wanted.items()}, part
        assert all(r.path.is_file() and r.start == 0 and r.stop is None for r in records[part])
    assert records["val"] == records["test"]
    missing = ucf_listed(UCF_MISSING) if name == "ucf101" else f"brush_hair/{HMDB_MISSING}"
    part = "train" if (name, split) in {("ucf101", 1), ("ucf101", 2), ("hmdb51", 2), ("hmdb51", 3)} else "test"
    reports = [r.getMessage() for r in caplog.records if "whose video is missing" in r.getMessage()]
    assert len(reports) == (1 if part == "train" else 2) and all(f"(first: {missing};" in m for m in reports)
    unlisted = ucf_listed(UCF_UNLISTED) if name == "ucf101" else HMDB_UNLISTED
    assert unlisted not in {r.name for rs in records.values() for r in rs}


def test_prepare_data_copies_the_videos_of_every_official_split(roots, tmp_path: Path) -> None:
    """``src/prepare_data.py data=hmdb51 data.split=1`` also prepares the videos that split 1 leaves unused (mark
    0) and splits 2 and 3 train on: each split reads the copy as it reads the raw root."""
    from vivit.data.prepare import run

    out = tmp_path / "prepared"
    options = [f"out={out}", f"report={tmp_path / 'report'}", "workers=0", "speed_samples=0", "short_side=16"]
    assert run(_data_cfg("hmdb51", roots["hmdb51"], tmp_path, "data.split=1", *options, config="prepare_data")) == 0
    report = json.loads((tmp_path / "report" / "prepare_data.json").read_text())
    assert report["counts"]["prepared"] == sum(map(len, HMDB_VIDEOS.values()))  # every listed video with a file
    assert {"split 1 train", "split 2 train", "split 3 test"} <= set(report["splits"])
    for split in (1, 2, 3):
        for part in ("train", "test"):
            raw = {r.name: r.labels for r in read_hmdb51(roots["hmdb51"], part, official_split=split)}
            prepared = read_hmdb51(out, part, official_split=split)
            assert {r.name: r.labels for r in prepared} == raw and all(r.path.is_relative_to(out) for r in prepared)


def test_ucf101_finds_a_file_whose_case_differs_from_its_list(roots) -> None:
    """The lists name HandstandPushups/v_HandStandPushups_g02_c01.avi; this copy's file is v_HandstandPushups_..."""
    (record,) = [r for r in read_ucf101(roots["ucf101"], "test", 2) if r.name.startswith("HandstandPushups/")]
    assert record.name == "HandstandPushups/v_HandStandPushups_g02_c01.avi"
    assert record.path.name == "v_HandstandPushups_g02_c01.avi" and record.path.is_file()


def test_ucf101_under_the_folder_name_ucf101(roots, tmp_path: Path) -> None:
    root = tmp_path / "ucf"
    shutil.copytree(roots["ucf101"], root)
    (root / "UCF-101").rename(root / "UCF101")
    assert {r.name for r in read_ucf101(root, "test", 1)} == set(ucf_expected(1)["test"])


def test_bad_lists_are_one_line_naming_the_file(roots, tmp_path: Path) -> None:
    ucf, hmdb = tmp_path / "ucf", tmp_path / "hmdb"
    shutil.copytree(roots["ucf101"], ucf)
    shutil.copytree(roots["hmdb51"], hmdb)
    trainlist = ucf / "ucfTrainTestlist" / "trainlist01.txt"
    with pytest.raises(ValueError, match=re.escape("data.split must be 1, 2 or 3 (the dataset's official")):
        read_ucf101(ucf, "train", official_split=4)
    lines = trainlist.read_text().splitlines()
    write_lines(trainlist, [lines[0].replace(" 1", " 2"), *lines[1:]], "\r\n")  # ApplyEyeMakeup's video as class 2
    message = f"{trainlist}: row {lines[0].split()[0]}: index 2 is class 'Archery' in classInd.txt, not the class"
    with pytest.raises(ValueError, match=re.escape(message)):
        read_ucf101(ucf, "train", official_split=1)
    write_lines(trainlist, [lines[0].replace(" 1", " one"), *lines[1:]], "\r\n")
    with pytest.raises(ValueError, match=re.escape(f"{trainlist}: line 1: expected '<Class>/<video>.avi [<index>]'")):
        read_ucf101(ucf, "train", official_split=1)
    trainlist.write_text("\r\n")
    with pytest.raises(ValueError, match=re.escape(f"{trainlist}: no rows")):
        read_ucf101(ucf, "train", official_split=1)
    trainlist.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"annotation file not found: {trainlist}")):
        read_ucf101(ucf, "train", official_split=1)

    split_file = hmdb / "testTrainMulti_7030_splits" / "cartwheel_test_split2.txt"
    split_file.write_text(split_file.read_text() + "Cartwheel_x_f_cm_np1_ri_bad_7.avi\n")
    with pytest.raises(ValueError, match=re.escape(f"{split_file}: line 5: expected '<name>.avi <0|1|2>'")):
        read_hmdb51(hmdb, "train", official_split=2)
    split_file.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"annotation file not found: {split_file} (1 classes")):
        read_hmdb51(hmdb, "test", official_split=2)


def test_data_split_is_checked_before_torch_and_at_construction(roots, tmp_path: Path) -> None:
    """data.split other than 1, 2, 3: one line naming the key, before torch is imported (src/train.py), and at the
    data module's construction; the split reaches the reader."""
    from test_configs import assert_fails_before_torch

    assert_fails_before_torch("train", ["data=hmdb51", "data.split=4"], "data.split=4: expected 1, 2 or 3", tmp_path)
    cfg = _data_cfg("hmdb51", roots["hmdb51"], tmp_path, "data.split=0")
    with pytest.raises(InstantiationException) as caught:
        instantiate(cfg.data)
    assert str(caught.value.__cause__) == (
        "data.split must be 1, 2 or 3 (the dataset's official train/test splits), got 0"
    )
    data = instantiate(_data_cfg("hmdb51", roots["hmdb51"], tmp_path, "data.split=3").data)
    assert data.split == 3 and data.annotations.keywords["official_split"] == 3


@pytest.fixture(scope="module")
def damaged_hmdb(roots, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the HMDB-51 fixture with one training video of split 1 damaged, and that video's path in it."""
    root = tmp_path_factory.mktemp("damaged") / "hmdb51"
    shutil.copytree(roots["hmdb51"], root)
    damaged = root / "hmdb51" / "sword_exercise" / HMDB_VIDEOS["sword_exercise"][1]  # split 1: train
    write_bad_video(damaged, "random", damaged)
    return root, damaged.relative_to(root).as_posix()


def test_check_data_names_missing_and_damaged_files(damaged_hmdb, tmp_path: Path) -> None:
    """src/check_data.py's report: the missing video of the split files, the damaged video; the video in no
    split is no problem."""
    root, damaged = damaged_hmdb
    report = check_data(instantiate(_data_cfg("hmdb51", root, tmp_path, config="check_data").data), workers=0)
    problems = {(p.split, Path(p.file).relative_to(root).as_posix()): p.problem for p in report.problems}
    missing, source = f"hmdb51/brush_hair/{HMDB_MISSING}", root / "testTrainMulti_7030_splits" / "*_test_split1.txt"
    assert problems.keys() == {("val", missing), ("test", missing), ("train", damaged)} and report.failed
    assert problems["test", missing] == f"video is missing (row of {source})"
    assert problems["train", damaged].startswith("InvalidDataError")


def test_a_damaged_video_is_counted_in_training(damaged_hmdb, tmp_path: Path) -> None:
    root, _ = damaged_hmdb
    overrides = [*TINY_NET, "model=factorised_encoder", "trainer=cpu", "trainer.max_epochs=1"]
    metrics = train(_data_cfg("hmdb51", root, tmp_path, *overrides, "data.max_bad_videos=0.5"))
    assert metrics["train/bad_videos"] == 1 and metrics["test/bad_videos"] == 0


def test_a_root_that_is_no_dataset_names_the_layout(tmp_path: Path) -> None:
    for name, module in (("ucf101", ucf101), ("hmdb51", hmdb51)):
        cfg = compose_config("train", [f"data={name}", f"data.root={tmp_path}"], tmp_path)
        with pytest.raises(InstantiationException) as caught:
            instantiate(cfg.data)
        message = str(caught.value.__cause__)
        assert message.startswith(f"data.root={tmp_path} is empty: annotation ") and "\n" not in message
        assert f"Expected under data.root: {module.LAYOUT}. " in message


def test_configs_fine_tune_with_kinetics_settings_and_check_the_class_count(roots, tmp_path: Path) -> None:
    """The recipe of a Kinetics ViViT-B/16x2; 101 and 51 classes, checked against the class table."""
    for name in ("ucf101", "hmdb51"):
        cfg = compose_config("train", [f"data={name}", f"data.root={roots[name]}"], tmp_path)
        d = cfg.data
        assert (d.num_frames, d.stride, d.crop_size, d.min_resize, d.test_clips, d.test_crops) == (
            32,
            2,
            224,
            256,
            4,
            3,
        )
        assert d.heads == {"label": {"ucf101": 101, "hmdb51": 51}[name]} and d.split == 1
        with pytest.raises(ValueError, match=f"data.heads.label={d.heads.label}, but the dataset under .* has 3"):
            instantiate(d).setup("fit")


def test_train_and_multiview_test_in_process(roots, tmp_path: Path) -> None:
    """data=ucf101 trains and tests (4 clips x 3 crops per video) through the shared path: every test video of
    split 1 is scored once, over its 12 views. Its checkpoint evaluates on split 2 with data.split=2 (a
    checkpoint keeps its config resolved: the split is one key, data.split)."""
    overrides = [*TINY_NET, "model=factorised_encoder", "trainer=cpu", "trainer.max_epochs=1", "data.test_clips=4"]
    metrics = train(_data_cfg("ucf101", roots["ucf101"], tmp_path, *overrides, "data.test_crops=3"))
    assert {"train/loss", "val/acc_top1", "test/acc_top1"} <= metrics.keys()
    videos = len(ucf_expected(1)["test"])  # 4
    assert metrics["test/videos"] == videos and metrics["test/views"] == 12 * videos

    (checkpoint,) = (tmp_path / "checkpoints").glob("epoch_*.ckpt")
    cfg = compose_config("eval", [f"ckpt_path={checkpoint}", "data.split=2"], tmp_path / "eval")
    assert evaluate(cfg)["test/videos"] == len(ucf_expected(2)["test"]) == 3


@pytest.mark.slow  # two training runs in subprocesses: about a minute on 2 cores
@pytest.mark.parametrize(("name", "split"), [("ucf101", None), ("hmdb51", 2)])
def test_train_command_trains_an_epoch_and_tests(name: str, split: int | None, roots, tmp_path: Path) -> None:
    """The user's command, python src/train.py data=ucf101 data.root=... (and data=hmdb51 data.split=2)."""
    command = [f"data={name}", f"data.root={roots[name]}", *SMALL, *TINY_NET, "model=factorised_encoder"]
    command += [f"data.heads.label={len(EXPECTED[name][0])}", f"data.num_classes={len(EXPECTED[name][0])}"]
    command += ["trainer=cpu", "trainer.max_epochs=1", "data.test_clips=2"] + ([f"data.split={split}"] if split else [])
    proc = run_script("train", *command, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test/acc_top1" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())  # a sweep over data.split tells its runs apart
    assert results["overrides"].get("data.split") == (str(split) if split else None)
