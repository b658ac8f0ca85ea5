"""Decoders (PyAV, torchcodec), folders of JPEG frames and ``data.target_fps``, on videos whose frame i
shows the grey level ``4 + 6 i`` (dataset_formats.md §8), so that a clip tells which frames were read."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from helpers import NEEDS_TORCHCODEC, RAMP_FRAMES, compose_config, ramp, write_frame_folder
from vivit.data import VideoDecodeError, VideoRecord
from vivit.data.clips import VideoClipDataset
from vivit.data.decoding import DECODERS, count_frames, decode_frames, frame_rate
from vivit.data.moving_digits import EPIC_HEADER, write_video
from vivit.data.sampling import clip_indices
from vivit.data.transforms import clip_transform
from vivit.data.video_csv import read_video_csv


def _frame_indices(frames: np.ndarray | torch.Tensor) -> list[int]:
    """The frame index each of ``(T, H, W, 3)`` uint8 frames shows."""
    levels = torch.as_tensor(frames).float().mean(dim=(1, 2, 3))
    return [round((level - 4) / 6) for level in levels.tolist()]


def _clip_indices(clip: torch.Tensor) -> list[int]:
    """The same for a normalised ``(C, T, H, W)`` clip."""
    levels = (clip.mean(dim=(0, 2, 3)) + 1) * 127.5
    return [round((level - 4) / 6) for level in levels.tolist()]


def _views(records: list[VideoRecord], num_frames: int, stride: int, clips: int = 1, **options) -> list[list[int]]:
    """The frame indices of every evaluation view of ``records``."""
    dataset = VideoClipDataset(
        records, num_frames, stride, clip_transform(False, crop_size=32), False, ["label"], clips=clips, **options
    )
    return [_clip_indices(dataset[i]["video"]) for i in range(len(dataset))]


# ---------------------------------------------------------------------------------------------- frame folders


def test_frame_folder_reads_only_the_frames_asked_for(tmp_path: Path) -> None:
    folder = tmp_path / "P01_01"
    write_frame_folder(folder, ramp())
    (folder / "notes.txt").write_text("not a frame")
    assert count_frames(folder) == RAMP_FRAMES
    assert _frame_indices(decode_frames(folder, [7, 0, 7, 39])) == [7, 0, 7, 39]
    with pytest.raises(ValueError, match="folder of frames, which has no frame rate"):
        frame_rate(folder)

    # unpadded numbers (img_1.jpg, ..., img_10.jpg) and SlowFast's <id>_000001.jpg names
    for name in ("img_{}.jpg", "78687_{:06d}.jpg"):
        other = tmp_path / name[:3]
        write_frame_folder(other, ramp(12), name)
        assert count_frames(other) == 12 and _frame_indices(decode_frames(other, [11, 9, 0])) == [11, 9, 0]


@pytest.mark.parametrize("problem", ["missing", "corrupt", "empty", "mixed"])
def test_bad_frame_folder_is_a_decode_error_naming_the_file(problem: str, tmp_path: Path) -> None:
    folder = tmp_path / "video"
    write_frame_folder(folder, ramp(10))
    bad = folder / "frame_0000000004.jpg"  # frame 3
    if problem == "missing":
        bad.unlink()
    elif problem == "corrupt":
        bad.write_bytes(bad.read_bytes()[:200])
    elif problem == "empty":
        for file in folder.iterdir():
            file.unlink()
    else:
        (folder / "flow_x_0000000001.jpg").write_bytes(bad.read_bytes())
    with pytest.raises(VideoDecodeError) as caught:
        count_frames(folder) if problem in ("empty", "mixed") else decode_frames(folder, [0, 3, 5])
    assert caught.value.path == folder
    expected = {"missing": bad.name, "corrupt": bad.name, "empty": "found none", "mixed": "flow_x_<n>.jpg"}[problem]
    assert expected in str(caught.value)


def _epic(root: Path) -> None:
    """P01_01 at 60 fps and P01_101 at 50 fps, 40 frames each, as .MP4 and as rgb_frames, with one
    validation segment each: frames 5..36 (1-based, inclusive)."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    row = "{v}_0,P01,{v},00:00:00.080,00:00:00.08,00:00:00.60,5,36,take tap,take,0,tap,0,['tap'],[0]"
    for split in ("train", "validation"):
        lines = [",".join(EPIC_HEADER), row.format(v="P01_01"), row.format(v="P01_101")]
        (ann / f"EPIC_100_{split}.csv").write_text("\n".join(lines) + "\n")
    for kind, names in (("verb", "take put wash"), ("noun", "tap spoon plate")):
        rows = [f"{i},{name},['{name}'],x" for i, name in enumerate(names.split())]
        (ann / f"EPIC_100_{kind}_classes.csv").write_text("\n".join(["id,key,instances,category", *rows]) + "\n")
    (ann / "EPIC_100_video_info.csv").write_text("video_id,duration,fps,resolution\nP01_01,0.67,60.0,32x32\n")
    for video, fps in (("P01_01", 60), ("P01_101", 50)):  # P01_101 is not in video_info: 50 from its id
        (root / "P01" / "videos").mkdir(parents=True, exist_ok=True)
        write_video(root / "P01" / "videos" / f"{video}.MP4", ramp(), fps)
        write_frame_folder(root / "P01" / "rgb_frames" / video, ramp())


@pytest.mark.parametrize("target_fps", [None, 30])
def test_epic_video_and_rgb_frames_give_the_same_frames(target_fps: int | None, tmp_path: Path) -> None:
    _epic(tmp_path)
    views = {}
    for frames in ("video", "rgb_frames"):
        overrides = [
            f"data.root={tmp_path}",
            f"data.annotations.frames={frames}",
            f"data.target_fps={target_fps or 'null'}",
        ]
        overrides += ["data.heads.verb=3", "data.heads.noun=3", "data.num_classes=6", "data.num_frames=4"]
        overrides += ["data.stride=3", "data.crop_size=32", "data.min_resize=null", "data.test_clips=2"]
        cfg = compose_config("train", ["data=epic_kitchens_100", *overrides], tmp_path)
        dm = instantiate(cfg.data)
        dm.setup("test")
        dataset = dm.datasets["test"]
        assert [r.path.name for r in dataset.records] == (
            ["P01_01.MP4", "P01_101.MP4"] if frames == "video" else ["P01_01", "P01_101"]
        )
        assert [r.fps for r in dataset.records] == [60.0, 50.0]
        views[frames] = [_clip_indices(dataset[i]["video"]) for i in range(len(dataset))]
    assert views["video"] == views["rgb_frames"]
    # The segment is frames 4..35 (0-based); 2 clips of 4 frames, 3 apart, at its start and its end. At 30 fps,
    # the stride is 3 frames of 1/30 s: 6 native frames at 60 fps, 5 at 50 fps.
    expected = {
        None: [[4, 7, 10, 13], [26, 29, 32, 35]] * 2,
        30: [[4, 10, 16, 22], [16, 22, 28, 34], [4, 9, 14, 19], [20, 25, 30, 35]],
    }
    assert views["video"] == expected[target_fps]


# ---------------------------------------------------------------------------------------------- target_fps


def test_clip_indices_at_a_target_rate() -> None:
    assert clip_indices(40, 4, 5, offset=0.0, rate=30 / 25) == [0, 6, 12, 18]  # 0.2 s apart at 30 fps
    assert clip_indices(40, 4, 5, offset=0.0, rate=25 / 25) == [0, 5, 10, 15]
    assert clip_indices(40, 4, 5, offset=0.0, rate=1.0) == clip_indices(40, 4, 5, offset=0.0)
    assert clip_indices(10, 4, 2, offset="centre", rate=2.0) == [0, 4, 8, 2]  # 5 frames at half the rate: loops
    assert clip_indices(50, 3, 1, offset=1.0, rate=50 / 60) == [47, 48, 49]  # the last of 60 frames at 60 fps
    assert clip_indices(3, 3, 1, offset=(0, 1), rate=50 / 60) == [0, 0, 1]  # upsampled: a frame repeats
    with pytest.raises(ValueError, match="rate > 0"):
        clip_indices(10, 2, 1, offset=0.0, rate=0.0)


def test_target_fps_resamples_25_and_30_fps_videos(tmp_path: Path) -> None:
    records = []
    for fps in (25, 30):
        write_video(tmp_path / f"{fps}.mp4", ramp(), fps)
        records.append(VideoRecord(path=tmp_path / f"{fps}.mp4", start=0, stop=None, labels={"label": 0}, name=""))
    assert [frame_rate(r.path) for r in records] == [25.0, 30.0]
    # native frames (ViViT): the same indices at both rates
    assert _views(records, 4, 5) == [[12, 17, 22, 27]] * 2
    # 25 fps: stride 5 is 0.2 s, i.e. 5 frames at 25 fps and 6 at 30 fps; the rate comes from the container
    assert _views(records, 4, 5, target_fps=25) == [[12, 17, 22, 27], [10, 16, 22, 28]]


def test_video_csv_frame_folders_with_an_fps_column(tmp_path: Path) -> None:
    write_frame_folder(tmp_path / "frames" / "abc", ramp(), "abc_{:06d}.jpg")
    (tmp_path / "clips").mkdir()
    write_video(tmp_path / "clips" / "d.mp4", ramp(), 30)
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text("path,label,fps\nframes/abc,cat,60\nclips/d.mp4,dog,\n")
    records = read_video_csv(tmp_path, "val")
    assert [(r.path.name, r.fps) for r in records] == [("abc", 60.0), ("d.mp4", None)]
    assert _views(records, 4, 2) == [[16, 18, 20, 22]] * 2
    assert _views(records, 4, 2, target_fps=30) == [[12, 16, 20, 24], [16, 18, 20, 22]]

    (tmp_path / "val.csv").write_text("path,label,fps\nframes/abc,cat,fast\n")
    with pytest.raises(ValueError, match=r"val.csv: row frames/abc: fps='fast' is not a number > 0"):
        read_video_csv(tmp_path, "val")
    records = [VideoRecord(path=tmp_path / "frames" / "abc", start=0, stop=None, labels={"label": 0}, name="")]
    with pytest.raises(ValueError, match="abc is a folder of frames, which has no frame rate"):
        _views(records, 4, 2, target_fps=30)


# ---------------------------------------------------------------------------------------------- torchcodec


def test_decoder_must_be_known_and_importable(monkeypatch, tmp_path: Path) -> None:
    cfg = compose_config("train", ["data=video_csv", f"data.root={tmp_path}", "data.heads.label=2"], tmp_path)
    assert cfg.data.decoder == "pyav" and cfg.data.target_fps is None

    def construction_error(**options) -> Exception:
        with pytest.raises(InstantiationException) as caught:
            instantiate(cfg.data, **options)
        return caught.value.__cause__

    error = construction_error(decoder="ffmpeg")
    assert isinstance(error, ValueError)
    assert str(error) == "data.decoder='ffmpeg' is not a decoder: choose one of ['pyav', 'torchcodec']"
    assert "data.target_fps must be null" in str(construction_error(target_fps=0))

    monkeypatch.setitem(sys.modules, "torchcodec", None)  # as if not installed: importing it raises ImportError
    DECODERS["torchcodec"].cache_clear()
    try:
        error = construction_error(decoder="torchcodec")
    finally:
        DECODERS["torchcodec"].cache_clear()
    assert isinstance(error, ImportError)
    assert str(error).startswith(
        "data.decoder=torchcodec needs the torchcodec package"
    ) and "pip install torchcodec" in str(error)


@NEEDS_TORCHCODEC
def test_torchcodec_decodes_as_pyav(tmp_path: Path) -> None:
    for name, fps in (("a.mp4", 30), ("b.webm", 12)):
        path = tmp_path / name
        write_video(path, ramp(), fps)
        assert count_frames(path, "torchcodec") == count_frames(path) == RAMP_FRAMES
        assert frame_rate(path, "torchcodec") == frame_rate(path) == fps
        indices = [5, 0, 5, 39, 12]
        frames = {decoder: decode_frames(path, indices, decoder) for decoder in ("pyav", "torchcodec")}
        assert frames["torchcodec"].shape == (5, 32, 32, 3) and frames["torchcodec"].dtype == np.uint8
        assert np.abs(frames["torchcodec"].astype(int) - frames["pyav"]).max() <= 2
        assert _frame_indices(frames["torchcodec"]) == indices
        with pytest.raises(VideoDecodeError, match=f"{name}: no frame at index 40"):
            decode_frames(path, [40], "torchcodec")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        decode_frames(tmp_path / "bad.mp4", [0], "torchcodec")
