"""src/prepare_data.py: a prepared copy gives the same records and frames, smaller, and a re-run skips what is done.

The copies are made in this process (``workers=0``), except in the test of bad videos, which uses a pool of 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from helpers import TINY_DATA, compose_config, write_bad_video
from test_configs import assert_fails_before_torch
from test_datasets import LEVELS, write_epic_kitchens, write_kinetics
from vivit.data.decoding import VideoDecodeError, count_frames, decode_frames, frame_rate
from vivit.data.loader_benchmark import sample_video
from vivit.data.moving_digits import write_video
from vivit.data.prepare import check_options, reencode, run
from vivit.data.prepare.dataset import _compare, _key
from vivit.data.prepare.video import target_size
from vivit.data.records import VideoRecord
from vivit.pipeline import train

# Kinetics' settings shrunk to the fixture: 3 classes, 4-frame clips, 16-pixel crops of the 16-pixel copy.
KINETICS = ["data=kinetics400", "data.heads.label=3", "data.num_classes=3", "data.num_frames=4", "data.stride=2"]
KINETICS += ["data.crop_size=16", "data.min_resize=null", "data.batch_size=3", "data.num_workers=0", "short_side=16"]
EPIC = ["data=epic_kitchens_100", "data.heads.verb=3", "data.heads.noun=3", "data.num_classes=6"]
EPIC += ["data.num_frames=4", "data.crop_size=32", "data.min_resize=null", "data.batch_size=2", "data.num_workers=0"]


def _cfg(root: Path, out: Path, tmp_path: Path, *overrides: str, data: list[str] = KINETICS):
    options = [f"data.root={root}", f"out={out}", f"report={tmp_path / 'report'}", "workers=0", "speed_samples=0"]
    return compose_config("prepare_data", [*data, *options, *overrides], tmp_path)


def _report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "report" / "prepare_data.json").read_text())


def _records(cfg, root: Path) -> dict[str, dict]:
    """Split -> record name -> (labels, start, stop, fps) as the data config reads ``root``."""
    datamodule = instantiate(cfg.data, root=str(root))
    return {
        split: {r.name: (r.labels, r.start, r.stop, r.fps) for r in datamodule.annotations(root, split)}
        for split in ("train", "val", "test")
    }


def _mtimes(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The Kinetics fixture (32x32 videos of 16 frames), its copy at a short side of 16, and the report."""
    base = tmp_path_factory.mktemp("prepare")
    raw, out = base / "raw", base / "prepared"
    write_kinetics(raw)
    assert run(_cfg(raw, out, base, "speed_samples=2")) == 0
    return raw, out, _report(base)


def test_kinetics_copy_gives_the_same_records_and_frames(kinetics, tmp_path: Path) -> None:
    raw, out, report = kinetics
    cfg = _cfg(raw, out, tmp_path)
    assert _records(cfg, out) == _records(cfg, raw)  # labels, names and segments; the rows left out are too
    assert report["counts"] == dict(prepared=11, skipped=0, failed=0, copied=3, left_out=1)
    # notes: an unused video, a missing one, an unknown label, and the resize without data.min_resize
    assert [p["severity"] for p in report["problems"]] == ["note"] * 4
    for video in report["videos"]:
        source, copy = Path(video["file"]), Path(video["output"])
        assert copy == out / source.relative_to(raw) and video["status"] == "prepared"
        assert count_frames(copy) == count_frames(source) == 16 and frame_rate(copy) == frame_rate(source) == 30
        assert decode_frames(copy, [0, 15]).shape == (2, 16, 16, 3)  # the requested short side
    for name in ("train.csv", "validate.csv", "test.csv"):
        assert (out / "annotations" / name).read_bytes() == (raw / "annotations" / name).read_bytes()
    assert report["bytes"]["after"] < report["bytes"]["before"]
    assert report["train_with"].startswith("python src/train.py data=kinetics400 data.heads.label=3 ")
    assert report["train_with"].endswith(f" data.root={out}")
    assert all(report["sample_seconds"][k] > 0 for k in ("raw", "prepared", "raw_decode", "prepared_decode"))

    # the copy loads: each clip shows its class's grey level
    datamodule = instantiate(cfg.data, root=str(out))
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["video"].shape == (3, 3, 4, 16, 16)
    levels = (batch["video"].mean(dim=(1, 2, 3, 4)) + 1) * 127.5
    assert torch.allclose(levels, torch.tensor([float(LEVELS[k]) for k in batch["label"]]), atol=6)


def test_a_rerun_skips_what_is_done_and_redoes_a_broken_copy(kinetics, tmp_path: Path) -> None:
    raw, done, _ = kinetics
    out = tmp_path / "prepared"
    shutil.copytree(done, out)  # with its times
    before = _mtimes(out)
    assert run(_cfg(raw, out, tmp_path)) == 0
    assert _report(tmp_path)["counts"]["skipped"] == 11 and _mtimes(out) == before  # nothing rewritten

    assert run(_cfg(raw, out, tmp_path, "crf=30")) == 0  # other settings: kept, and said so
    assert any(p["problem"].startswith("crf=18 in an earlier run") for p in _report(tmp_path)["problems"])
    broken = out / "train" / "0wR5jVB-WPk_000417_000427.mp4"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # as a kill mid-copy would leave it
    (out / "annotations" / "test.csv").unlink()
    assert run(_cfg(raw, out, tmp_path)) == 0
    counts = _report(tmp_path)["counts"]
    assert (counts["prepared"], counts["skipped"]) == (1, 10)
    assert count_frames(broken) == 16
    assert (out / "annotations" / "test.csv").read_bytes() == (raw / "annotations" / "test.csv").read_bytes()
    changed = {name for name, time in _mtimes(out).items() if before.get(name) != time}
    assert changed == {"train/0wR5jVB-WPk_000417_000427.mp4"}  # a copied file keeps its source's time
    assert not list(out.rglob("*.partial"))


def test_bad_videos_are_reported_and_the_others_prepared(kinetics, tmp_path: Path, capsys) -> None:
    """Two bad training videos, in a pool of 2 processes: reported with their rows, and the status is 1."""
    raw = tmp_path / "raw"
    shutil.copytree(kinetics[0], raw)
    good = raw / "train" / "--nQbRBEz2s_000104_000114.mp4"
    with open(raw / "annotations" / "train.csv", "a") as f:
        for kind, ytid in (("truncated", "tRuNcAtEd00"), ("no_video", "nOvIdEo0000")):
            write_bad_video(raw / "train" / f"{ytid}_000000_000010.mp4", kind, good)
            f.write(f"abseiling,{ytid},0,10,train,0\n")
    out = tmp_path / "prepared"
    assert run(_cfg(raw, out, tmp_path, "workers=2")) == 1
    printed = capsys.readouterr().out
    assert "| error | train |" in printed and "_000010.mp4 | nOvIdEo0000_000000_000010 | no video stream |" in printed
    report = _report(tmp_path)
    errors = {Path(p["file"]).name: p["problem"] for p in report["problems"] if p["severity"] == "error"}
    assert errors.keys() == {"tRuNcAtEd00_000000_000010.mp4", "nOvIdEo0000_000000_000010.mp4"}
    assert "InvalidDataError" in errors["tRuNcAtEd00_000000_000010.mp4"]
    assert report["counts"]["prepared"] == 11 and report["counts"]["failed"] == 2
    assert report["splits"]["train"] == dict(records=8, videos=8, failed=2)
    cfg = _cfg(raw, out, tmp_path)
    raw_records, copied = _records(cfg, raw), _records(cfg, out)
    del raw_records["train"]["tRuNcAtEd00_000000_000010"], raw_records["train"]["nOvIdEo0000_000000_000010"]
    assert copied == raw_records  # a bad video's rows are left out of the copy, as training leaves them out


def test_command_line_checks_the_options_first(tmp_path: Path) -> None:
    """A bad option fails before any work, and before torch is imported, naming the dataset."""
    args = ["data=ssv2", f"data.root={tmp_path / 'raw'}", f"out={tmp_path / 'out'}", "format=jpeg"]
    assert_fails_before_torch("prepare_data", args, "format=jpeg: data=ssv2 cannot read the copy", tmp_path)
    assert not (tmp_path / "out").exists()


def test_moving_digits_copy_trains(tiny_cfg, data_dir: Path, tmp_path: Path) -> None:
    """The built-in data, prepared, trains and tests with the same config (its generator sees it is there)."""
    out = tmp_path / "moving_digits"
    cfg = _cfg(data_dir / "moving_digits", out, tmp_path, data=TINY_DATA)
    assert run(cfg) == 0
    assert _report(tmp_path)["counts"]["prepared"] == 72
    video = out / "P01" / "videos" / "P01_01.MP4"
    with av.open(str(video)) as container:  # all 8 frames, the first a keyframe
        keyframes = [packet.is_keyframe for packet in container.demux(container.streams.video[0]) if packet.size]
    assert len(keyframes) == 8 and keyframes[0]
    before = _mtimes(out)
    metrics = train(tiny_cfg(f"data.root={out}", "debug=fdr"))
    assert {"train/loss", "val/acc_top1", "test/acc_top1"} <= metrics.keys()
    assert _mtimes(out) == before  # not generated again over the copy


def test_jpeg_frames_of_epic_videos(tmp_path: Path) -> None:
    """format=jpeg writes EPIC's rgb_frames layout; data.annotations.frames=rgb_frames reads the same segments."""
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    write_epic_kitchens(raw)
    assert run(_cfg(raw, out, tmp_path, "format=jpeg", "jpeg_quality=95", data=EPIC)) == 0
    report = _report(tmp_path)
    assert [p["severity"] for p in report["problems"]] == ["note", "note"]  # val and test: P09_01 is missing
    assert "data.annotations.frames=rgb_frames" in report["train_with"]
    for video in ("P01_01", "P01_101"):
        folder = out / "P01" / "rgb_frames" / video
        assert (folder / "frame_0000000001.jpg").is_file() and count_frames(folder) == 16
        frames = decode_frames(folder, list(range(16))).astype(int)
        assert np.abs(frames - decode_frames(raw / "P01" / "videos" / f"{video}.MP4", list(range(16)))).mean() < 2
    assert not (out / "P01" / "videos").exists()

    cfg = _cfg(raw, out, tmp_path, "data.annotations.frames=rgb_frames", data=EPIC)
    assert _records(cfg, out) == _records(_cfg(raw, out, tmp_path, data=EPIC), raw)
    datamodule = instantiate(cfg.data, root=str(out))
    datamodule.setup("fit")
    assert next(iter(datamodule.val_dataloader()))["video"].shape == (2, 3, 4, 32, 32)


def _pattern(index: int) -> np.ndarray:
    """A 64x48 frame that shows ``index`` in binary, in ten white or black columns along its top, over noise."""
    frame = np.random.default_rng(index).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frame[:16] = 0
    for bit in range(10):
        frame[:16, 6 * bit : 6 * bit + 6] = 255 * (index >> bit & 1)
    return frame


def _indices(frames: np.ndarray) -> list[int]:
    """The index that each of ``(T, H, W, 3)`` frames of :func:`_pattern`, at any size, shows."""
    height, width = frames.shape[1:3]
    top = frames[:, : height // 4].mean(axis=(1, 3))  # (T, W)
    return [sum(int(row[int((6 * bit + 3) * width / 64)] > 128) << bit for bit in range(10)) for row in top]


def test_far_frames_stay_the_same_after_a_seek(tmp_path: Path) -> None:
    """A 330-frame WebM: the copy (MPEG-4 in Matroska under the same name) gives each frame at its index, with
    keyframes at most 16 frames apart."""
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    (raw / "train" / "cat").mkdir(parents=True)
    write_video(raw / "train" / "cat" / "long.webm", np.stack([_pattern(i) for i in range(330)]), 25)
    data = ["data=video_csv", "data.heads.label=1"]
    assert run(_cfg(raw, out, tmp_path, "splits=[train]", "short_side=24", data=data)) == 0
    copy = out / "train" / "cat" / "long.webm"
    assert count_frames(copy) == 330 and frame_rate(copy) == 25
    wanted = [0, 17, 299, 300, 310, 329]
    frames = decode_frames(copy, wanted)
    assert frames.shape[1:] == (24, 32, 3) and _indices(frames) == wanted
    with av.open(str(copy)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mpeg4"
        keyframes = [i for i, p in enumerate(p for p in container.demux(stream) if p.size) if p.is_keyframe]
    assert keyframes[0] == 0 and max(np.diff(keyframes)) <= 16


def test_sizes_one_video_and_options(kinetics, tmp_path: Path) -> None:
    """The output size, one video on its own (as the loader benchmark prepares it), the records check, and the
    options that fail before any work."""
    assert target_size(1920, 1080, 256) == (454, 256) and target_size(480, 640, 320) == (320, 426)
    assert target_size(37, 21, 256) == (36, 20)  # never up; even for yuv420p
    good = kinetics[0] / "train" / "0wR5jVB-WPk_000417_000427.mp4"
    assert reencode(good, tmp_path / "one.mp4", short_side=8).size == (8, 8)
    assert count_frames(tmp_path / "one.mp4") == 16
    bikes = sample_video("bikes.mp4")  # real content: the quantiser changes the size
    quality = {q: reencode(bikes, tmp_path / f"q{q}.mp4", short_side=64, qscale=q).output_bytes for q in (2, 12)}
    assert quality[2] > quality[12]  # mpeg4's quantiser is applied (the qscale flag alone left it to the frames)
    write_bad_video(tmp_path / "bad.mp4", "empty", good)
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        reencode(tmp_path / "bad.mp4", tmp_path / "two.mp4")

    # a copy whose annotations give other records (another label) is an error
    record = VideoRecord(good, 0, None, {"label": 1}, "a")
    expected = [_key(record, good)]
    assert _compare(lambda root, split: [record], tmp_path, "train", expected) is None
    other = VideoRecord(good, 0, None, {"label": 2}, "a")
    assert "1 missing (first: a), 1 others" in _compare(lambda root, split: [other], tmp_path, "train", expected)

    raw = tmp_path / "raw"
    (raw / "annotations").mkdir(parents=True)
    for overrides, message in (
        (["format=jpeg"], "format=jpeg: data=kinetics400 cannot read the copy"),
        (["codec=libvpx"], "codec='libvpx': choose one of"),
        (["keyframe_interval=0"], "keyframe_interval=0: expected a whole number from 1"),
        (["codec=libx264", "preset=quick"], "preset='quick': choose one of"),
        (["codec=libx264", "tune=fast"], "tune='fast': choose null or one of"),
        ([f"out={raw / 'prepared'}"], "must be a directory outside data.root"),
    ):
        with pytest.raises(ValueError, match=message):
            check_options(_cfg(raw, tmp_path / "prepared", tmp_path, *overrides))
