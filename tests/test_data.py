"""Data pipeline: moving-digits generation, EPIC-KITCHENS-100 reader, decoding, sampling, transforms, loaders."""

from __future__ import annotations

import csv
import functools
import json
import logging
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hydra.utils import get_method

from helpers import assert_same_encoding, write_bad_video
from vivit.data import (
    VideoDataModule,
    VideoDecodeError,
    decode_frames,
    decoding,
    generate_moving_digits,
    read_epic_kitchens_100,
)
from vivit.data.clips import VideoClipDataset, WholeVideoSampler
from vivit.data.epic_kitchens import read_epic_kitchens_class_names
from vivit.data.moving_digits import EPIC_HEADER, NOUNS, VERBS, _background, _pick_codec, render_clip, sample_motion
from vivit.data.sampling import clip_indices
from vivit.data.transforms import clip_transform

TINY = dict(num_train=24, num_val=12, num_frames=8, size=36, fps=60, seed=0)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "moving_digits"
    generate_moving_digits(root, **TINY)
    return root


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _all_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _data_module(root: Path, **overrides) -> VideoDataModule:
    kwargs = dict(
        root=str(root),
        annotations=read_epic_kitchens_100,
        classes=read_epic_kitchens_class_names,
        heads={"verb": 6},
        num_frames=4,
        stride=2,
        crop_size=32,
        hflip_prob=0.0,
        batch_size=4,
        num_workers=0,
    )
    return VideoDataModule(**{**kwargs, **overrides})


# ---------------------------------------------------------------------------------------------- generation


def test_generation_is_deterministic_and_seeded(tmp_path: Path) -> None:
    small = dict(num_train=6, num_val=6, num_frames=6, size=36)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate_moving_digits(tmp_path / name, seed=seed, **small)

    def content(name: str) -> tuple[list, list[np.ndarray]]:
        root = tmp_path / name
        tables = [_csv_rows(p) for p in sorted((root / "annotations").glob("*.csv"))]
        videos = [_all_frames(p) for p in sorted(root.glob("P*/videos/*.MP4"))]
        return tables, videos

    (tables_a, videos_a), (tables_b, videos_b), (tables_c, videos_c) = map(content, "abc")
    assert len(videos_a) == 12 and all(v.shape == (6, 36, 36, 3) for v in videos_a)
    assert tables_a == tables_b
    for x, y in zip(videos_a, videos_b, strict=True):
        assert_same_encoding(x, y)
    assert np.abs(videos_a[0].astype(int) - videos_c[0]).mean() > 5  # another seed: another clip


def test_generation_is_skipped_when_up_to_date_and_redone_otherwise(tmp_path: Path) -> None:
    root = tmp_path / "md"
    generate_moving_digits(root, num_train=6, num_val=3, num_frames=4)
    first_video = root / "P01" / "videos" / "P01_01.MP4"
    stamp = first_video.stat().st_mtime_ns
    (root / "notes.txt").write_text("not the generator's")

    generate_moving_digits(root, num_train=6, num_val=3, num_frames=4)  # same parameters: nothing written
    assert first_video.stat().st_mtime_ns == stamp

    generate_moving_digits(root, num_train=3, num_val=2, num_frames=4, seed=5)
    assert json.loads((root / "moving_digits.json").read_text())["seed"] == 5
    assert len(list(root.glob("P*/videos/*.MP4"))) == 5  # the 4 stale videos are gone
    assert (root / "notes.txt").exists()


def test_annotation_files_have_the_epic_headers(tiny_root: Path) -> None:
    ann = tiny_root / "annotations"
    assert _csv_rows(ann / "EPIC_100_train.csv")[0] == EPIC_HEADER
    assert _csv_rows(ann / "EPIC_100_validation.csv")[0] == EPIC_HEADER
    assert _csv_rows(ann / "EPIC_100_verb_classes.csv")[0] == ["id", "key", "instances", "category"]
    assert _csv_rows(ann / "EPIC_100_noun_classes.csv")[0] == ["id", "key", "instances", "category"]
    assert _csv_rows(ann / "EPIC_100_video_info.csv")[0] == ["video_id", "duration", "fps", "resolution"]
    assert read_epic_kitchens_class_names(tiny_root) == {"verb": list(VERBS), "noun": list(NOUNS)}
    # the reader's name before it was renamed, in the run configs of earlier checkpoints
    assert get_method("vivit.data.read_class_names") is read_epic_kitchens_class_names

    row = dict(zip(EPIC_HEADER, _csv_rows(ann / "EPIC_100_train.csv")[1], strict=True))
    assert row["narration_id"] == "P01_01_0" and row["participant_id"] == "P01" and row["video_id"] == "P01_01"
    assert (row["start_timestamp"], row["stop_timestamp"], row["narration_timestamp"]) == (
        "00:00:00.00",
        "00:00:00.13",
        "00:00:00.000",
    )  # 8 frames at 60 fps
    assert (row["start_frame"], row["stop_frame"]) == ("1", "8")
    assert row["narration"] == f"{row['verb']} {row['noun']}"
    assert row["all_nouns"] == f"['{row['noun']}']" and row["all_noun_classes"] == f"[{row['noun_class']}]"
    verbs = [int(r[EPIC_HEADER.index("verb_class")]) for r in _csv_rows(ann / "EPIC_100_train.csv")[1:]]
    assert np.bincount(verbs).tolist() == [4] * 6  # balanced


def test_train_and_val_digits_come_from_disjoint_halves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.datasets import load_digits

    from vivit.data import moving_digits

    rendered = []
    monkeypatch.setattr(
        moving_digits, "render_clip", lambda digit, *args: rendered.append(digit) or render_clip(digit, *args)
    )
    generate_moving_digits(tmp_path, num_train=10, num_val=10, num_frames=2)
    images = load_digits().images / 16.0
    half = len(images) // 2
    first, second = ({image.tobytes() for image in part} for part in (images[:half], images[half:]))
    assert all(digit.tobytes() in first for digit in rendered[:10])
    assert all(digit.tobytes() in second for digit in rendered[10:])


@pytest.mark.parametrize("pair", [(0, 1), (2, 3), (5, 4)])
def test_paired_verbs_are_time_reverses(pair: tuple[int, int]) -> None:
    backward, forward = pair
    for seed in range(20):
        a = sample_motion(backward, 36, np.random.default_rng(seed))
        b = sample_motion(forward, 36, np.random.default_rng(seed))
        assert a == b.reversed()
        axis = {0: b.x, 2: b.y, 5: b.side}[backward]
        assert axis[1] > axis[0] + 3  # the forward one moves right / down / grows, by a visible amount


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(y, x) centre of mass of a (H, W) weight map."""
    ys, xs = np.indices(mask.shape)
    return np.array([(ys * mask).sum(), (xs * mask).sum()]) / mask.sum()


def test_rendered_sprite_follows_its_motion() -> None:
    rng = np.random.default_rng(0)
    digit, flat = np.ones((8, 8)), np.full((36, 36, 3), 0.5)
    for verb, (dy, dx) in {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}.items():
        clip = render_clip(digit, sample_motion(verb, 36, rng), np.ones(3), flat, 8).astype(float)
        step = _centroid(clip[-1, ..., 0] - 128) - _centroid(clip[0, ..., 0] - 128)
        assert (np.sign(step) * (np.abs(step) > 1)).tolist() == [dy, dx], VERBS[verb]
    grown = render_clip(digit, sample_motion(4, 36, rng), np.ones(3), flat, 8)
    assert (grown[-1] > 200).sum() > 2 * (grown[0] > 200).sum()
    assert _background(36, np.random.default_rng(1)).std() > 0.02  # textured, not flat


def test_decoded_clips_move_as_labelled(tiny_root: Path) -> None:
    for record in read_epic_kitchens_100(tiny_root, "train"):
        verb = record.labels["verb"]
        if verb > 3:
            continue
        clip = decode_frames(record.path, [0, 7]).astype(float)
        background = np.median(_all_frames(record.path).astype(float), axis=0)
        first, last = (_centroid(np.abs(frame - background).sum(-1)) for frame in clip)
        axis, sign = divmod(verb, 2)  # left/right: x axis (1); up/down: y axis (0); sign 0 = towards 0
        assert (last - first)[1 - axis] * (1 if sign else -1) > 2, record


# ---------------------------------------------------------------------------------------------- EPIC reader


def test_reader_returns_existing_in_range_records(tiny_root: Path) -> None:
    train, val = read_epic_kitchens_100(tiny_root, "train"), read_epic_kitchens_100(tiny_root, "val")
    assert len(train) == 24 and len(val) == 12
    assert read_epic_kitchens_100(tiny_root, "test") == val  # EPIC test labels are hidden: test reads validation
    for record in train + val:
        assert record.path.is_file() and record.path.suffix == ".MP4"
        assert (record.start, record.stop) == (0, 8)  # EPIC frames 1..8 -> [0, 8)
        assert 0 <= record.labels["verb"] < 6 and 0 <= record.labels["noun"] < 10
    assert train[0].name == "P01_01_0" and train[0].path == tiny_root / "P01" / "videos" / "P01_01.MP4"


def _epic_copy(tiny_root: Path, dest: Path, rows: list[dict[str, str]]) -> Path:
    """An EPIC root with the tiny dataset's class files and videos and the given training rows."""
    shutil.copytree(tiny_root, dest)
    with open(dest / "annotations" / "EPIC_100_train.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return dest


def _row(**changes: str) -> dict[str, str]:
    row = dict(
        narration_id="P01_01_7",
        participant_id="P01",
        video_id="P01_01",
        start_frame="3",
        stop_frame="7",
        verb_class="2",
        noun_class="9",
    )
    return {**row, **changes}


def test_reader_converts_frames_and_skips_missing_videos(tiny_root: Path, tmp_path: Path, caplog) -> None:
    missing = [_row(narration_id=f"P09_0{i}_0", participant_id="P09", video_id=f"P09_0{i}") for i in range(3)]
    root = _epic_copy(tiny_root, tmp_path / "epic", [_row(), *missing])
    with caplog.at_level(logging.WARNING):
        (record,) = read_epic_kitchens_100(root, "train")
    assert (record.start, record.stop, record.labels, record.name) == (2, 7, {"verb": 2, "noun": 9}, "P01_01_7")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 of 4" in warnings[0] and "P09_00_0" in warnings[0]

    shutil.rmtree(root / "P01")
    with pytest.raises(ValueError, match="EPIC_100_train.csv"):
        read_epic_kitchens_100(root, "train")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (_row(verb_class="6"), r"EPIC_100_train.csv: row P01_01_7: label 'verb_class=6' is not a class"),
        (_row(noun_class="-1"), r"EPIC_100_train.csv: row P01_01_7: label 'noun_class=-1' is not a class"),
        (_row(noun_class="x"), r"label 'noun_class=x' is not a class"),
        ({k: v for k, v in _row().items() if k != "stop_frame"}, r"EPIC_100_train.csv.*'stop_frame'"),
    ],
)
def test_reader_rejects_bad_rows(tiny_root: Path, tmp_path: Path, row: dict, message: str) -> None:
    """Class ids outside the class tables: an error naming the row with ``strict`` (otherwise skipped and
    reported, as tests/test_datasets.py checks); a missing column: always."""
    root = _epic_copy(tiny_root, tmp_path / "epic", [row])
    with pytest.raises(ValueError, match=message):
        read_epic_kitchens_100(root, "train", strict=True)


def test_reader_names_a_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="EPIC_100_validation.csv"):
        read_epic_kitchens_100(tmp_path, "val")


# ---------------------------------------------------------------------------------------------- decoding


def test_decode_frames_returns_the_requested_frames(tiny_root: Path) -> None:
    path = tiny_root / "P01" / "videos" / "P01_01.MP4"
    everything = _all_frames(path)
    assert everything.shape == (8, 36, 36, 3)
    clip = decode_frames(path, [5, 1, 1, 7])
    assert clip.dtype == np.uint8 and clip.shape == (4, 36, 36, 3)
    assert np.array_equal(clip, everything[[5, 1, 1, 7]])
    with pytest.raises(VideoDecodeError, match="P01_01.MP4"):
        decode_frames(path, [8])  # one past the last frame


def test_decode_frames_seeks_far_into_a_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.MP4"
    with av.open(str(path), "w", format="mp4") as container:  # 48 frames, a keyframe every 8
        stream = container.add_stream(_pick_codec(), rate=50, options={"g": "8"})
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for i in range(48):
            image = np.full((16, 16, 3), 5 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    indices = [30, 21, 47, 21]
    from_start = _all_frames(path)[indices]
    keyframes = decoding.frame_index(path).keyframes
    assert max(k for k in keyframes if k <= 21) > 0  # so the decoder seeks (to the keyframe before frame 21)

    def no_fallback(*args):
        raise AssertionError("decoded from the start: the frames after the seek were not found")

    monkeypatch.setattr(decoding, "_decode_from_start", no_fallback)
    assert np.array_equal(decode_frames(path, indices), from_start)
    assert np.abs(from_start[:, 0, 0, 0].astype(int) - [150, 105, 235, 105]).max() <= 4


def test_decode_frames_names_the_file_on_bad_input(tiny_root: Path, tmp_path: Path) -> None:
    good = tiny_root / "P01" / "videos" / "P01_01.MP4"
    kinds = ("empty", "random", "truncated", "no_video")
    for kind in kinds:
        write_bad_video(tmp_path / f"{kind}.MP4", kind, good)
    for name in ["missing.MP4", *(f"{kind}.MP4" for kind in kinds)]:
        with pytest.raises(VideoDecodeError, match=name) as caught:
            decode_frames(tmp_path / name, [0, 1])
        assert isinstance(caught.value, RuntimeError) and caught.value.path == tmp_path / name


# ---------------------------------------------------------------------------------------------- sampling, transforms


def test_clip_indices_start_at_the_offset_and_loop_in_a_short_video() -> None:
    assert clip_indices(100, 4, 2, offset="centre") == [46, 48, 50, 52]  # span 7, starts 0..93, centre 46
    assert clip_indices(100, 4, 2, offset=0.0) == [0, 2, 4, 6]
    assert clip_indices(100, 4, 2, offset=1.0) == [93, 95, 97, 99]
    rng = np.random.default_rng(0)
    starts = {clip_indices(100, 4, 2, offset=rng.random())[0] for _ in range(200)}
    assert len(starts) > 50 and min(starts) >= 0 and max(starts) <= 93
    assert clip_indices(3, 5, 1, offset="centre") == [0, 1, 2, 0, 1]  # shorter than the span: loop
    assert clip_indices(3, 3, 2, offset=0.7) == [0, 2, 1]
    assert clip_indices(8, 8, 1, offset=0.99) == list(range(8))
    with pytest.raises(ValueError):
        clip_indices(10, 4, 1, offset=1.5)


def test_test_clips_are_evenly_spaced() -> None:
    starts = [clip_indices(100, 4, 2, offset=(k, 4))[0] for k in range(4)]
    assert starts == [0, 31, 62, 93]  # DMVR: linspace(0, 93, 4), truncated
    assert clip_indices(100, 4, 2, offset=(0, 1)) == clip_indices(100, 4, 2, offset="centre")
    assert [clip_indices(5, 4, 2, offset=(k, 2)) for k in range(2)] == [[0, 2, 4, 1]] * 2  # too short: loops
    with pytest.raises(ValueError):
        clip_indices(100, 4, 2, offset=(4, 4))


@pytest.mark.parametrize("portrait", [False, True])
def test_three_spatial_crops(portrait: bool) -> None:
    """Left/centre/right crops of a landscape clip, top/middle/bottom of a portrait one, centred across."""
    height, width = (60, 36) if portrait else (36, 60)
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")  # pixel = its coordinates
    frames = torch.stack([y, x, torch.zeros_like(x)], -1).expand(2, height, width, 3).to(torch.uint8)  # (T, H, W, 3)
    crops = [clip_transform(False, crop_size=32, mean=(0, 0, 0), std=(1, 1, 1), crop=(j, 3))(frames) for j in range(3)]
    long_axis = 2 if portrait else 3  # of (C, T, H, W)
    for j, crop in enumerate(crops):
        assert crop.shape == (3, 2, 32, 32)
        top_left = (crop[:, 0, 0, 0] * 255).round().tolist()  # (row, column) of the crop's first pixel
        along, across = (0, 14, 28)[j], 2  # (60 - 32) / 2 and (36 - 32) / 2
        assert top_left[:2] == ([along, across] if portrait else [across, along])
        assert crop.select(long_axis, 0).shape == (3, 2, 32)
    torch.testing.assert_close(crops[1], clip_transform(False, crop_size=32, mean=(0, 0, 0), std=(1, 1, 1))(frames))
    small = clip_transform(False, crop_size=40, crop=(2, 3))(frames[:, :30, :30])  # zero-padded, as CenterCrop
    assert small.shape == (3, 2, 40, 40)


def test_clip_transform_crops_flips_and_scales_to_minus_one_one() -> None:
    frames = torch.randint(0, 256, (4, 36, 40, 3), dtype=torch.uint8)
    evaluation = clip_transform(False, crop_size=32)(frames)
    assert evaluation.shape == (3, 4, 32, 32) and evaluation.dtype == torch.float32
    expected = frames[:, 2:34, 4:36].permute(3, 0, 1, 2).float() / 127.5 - 1  # centre crop, [-1, 1]
    torch.testing.assert_close(evaluation, expected)

    flipped = clip_transform(True, crop_size=36, hflip_prob=1.0)(frames[:, :, 2:38].numpy())
    torch.testing.assert_close(flipped, frames[:, :, 2:38].flip(2).permute(3, 0, 1, 2).float() / 127.5 - 1)

    resized = clip_transform(True, crop_size=16, min_resize=18, hflip_prob=0.5)(frames)
    assert resized.shape == (3, 4, 16, 16) and resized.min() >= -1 and resized.max() <= 1


# ---------------------------------------------------------------------------------------------- datamodule


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_hold_clips_labels_and_indices(tiny_root: Path, num_workers: int) -> None:
    dm = _data_module(tiny_root, num_workers=num_workers)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 6  # 24 clips / 4, drop_last
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        assert set(batch) == {"video", "label", "index", "view", "bad_files"}
        assert batch["video"].shape == (4, 3, 4, 32, 32) and batch["video"].dtype == torch.float32
        assert batch["video"].min() >= -1 and batch["video"].max() <= 1
        assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
        assert batch["index"].dtype == torch.int64
        records = loader.dataset.records
        assert batch["label"].tolist() == [records[i].labels["verb"] for i in batch["index"]]


def test_two_heads_give_each_clip_a_verb_and_a_noun(tiny_root: Path) -> None:
    dm = _data_module(tiny_root, heads={"verb": 6, "noun": 10}, num_classes=16)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    assert batch["label"].shape == (4, 2) and batch["label"].dtype == torch.int64
    records = dm.datasets["val"].records
    expected = [[records[i].labels["verb"], records[i].labels["noun"]] for i in batch["index"]]
    assert batch["label"].tolist() == expected
    assert dm.class_names["noun"][0] == "zero"


def test_test_views_are_items_and_whole_videos_per_process(tiny_root: Path) -> None:
    dm = _data_module(tiny_root, test_clips=2, test_crops=3, batch_size=6)
    dm.setup("test")
    dataset = dm.datasets["test"]
    records = dataset.records
    assert len(dataset) == 6 * len(records) and dataset.views == 6
    batch = next(iter(dm.test_dataloader()))  # the six views of video 0: clip view // 3, crop view % 3
    assert batch["index"].tolist() == [0] * 6 and batch["view"].tolist() == list(range(6))
    frames = decode_frames(records[0].path, [records[0].start + i for i in clip_indices(8, 4, 2, offset=(1, 2))])
    right = clip_transform(False, crop_size=32, crop=(2, 3))(frames)
    torch.testing.assert_close(batch["video"][5], right)  # clip 1, right crop

    videos = len(records[:5])
    dataset = VideoClipDataset(records[:5], 4, 2, [None] * 3, False, ["verb"], clips=2)
    shards = [list(WholeVideoSampler(dataset, 2, rank)) for rank in range(2)]
    assert len(shards[0]) + len(shards[1]) == 6 * videos and sorted(shards[0] + shards[1]) == list(range(6 * videos))
    assert {i // 6 for i in shards[0]} == {0, 2, 4} and {i // 6 for i in shards[1]} == {1, 3}


def test_data_module_validates_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.root=.*nowhere does not exist"):
        _data_module(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"data.num_classes.*data.heads"):
        _data_module(tmp_path, heads={"verb": 6, "noun": 10}, num_classes=6)
    for key in ("num_frames", "stride"):
        with pytest.raises(ValueError, match=f"data.{key}"):
            _data_module(tmp_path, **{key: 0})
    with pytest.raises(ValueError, match="data.heads"):
        _data_module(tmp_path, heads={})


def test_data_module_generates_on_prepare(tmp_path: Path) -> None:
    generate = functools.partial(generate_moving_digits, num_train=4, num_val=2, num_frames=4)
    dm = _data_module(tmp_path / "new", generate=generate, batch_size=2)
    dm.prepare_data()
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["video"].shape == (2, 3, 4, 32, 32)
