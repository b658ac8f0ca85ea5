"""Videos that fail to decode: replaced and counted in training, with a limit; raised or left out in evaluation."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from helpers import (
    TINY_DATA,
    TINY_NET,
    VFR_TIMES_MS,
    VIDEO_DECODERS,
    compose_config,
    run_script,
    write_bad_video,
    write_cut_video,
    write_vfr_video,
)
from vivit.data import VideoDecodeError, VideoRecord, read_epic_kitchens_100
from vivit.data.clips import VideoClipDataset, collate_clips
from vivit.data.decoding import count_frames, decode_frames
from vivit.data.moving_digits import write_video
from vivit.data.resumable import EpochSampler
from vivit.data.transforms import clip_transform
from vivit.pipeline import build
from vivit.run_directory import check_message
from vivit.training.bad_videos import BadVideos, MarkedCount

KINDS = ("truncated", "empty", "no_video")


def _spoilt(data_dir: Path, dest: Path, split: str, count: int | list[int]) -> tuple[Path, list[str]]:
    """A copy of the tiny built-in dataset whose first ``count`` videos of ``split`` (or those at the indices
    ``count``) cannot be decoded."""
    root = dest / "moving_digits"
    shutil.copytree(data_dir / "moving_digits", root)
    records = read_epic_kitchens_100(root, split)
    assert len({r.path for r in records}) == len(records)  # one segment per video file
    spoilt = [records[i] for i in (range(count) if isinstance(count, int) else count)]
    good = next(r for r in reversed(records) if r not in spoilt).path
    for i, record in enumerate(spoilt):
        write_bad_video(record.path, KINDS[i % len(KINDS)], good)
    return root, [str(r.path) for r in spoilt]


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_training_replaces_a_bad_video_and_lists_it(kind: str, data_dir: Path, tmp_path: Path, caplog) -> None:
    """A training item whose video fails to decode: logged and replaced by a random other, and listed with its
    batch; nothing but bad videos: an error naming them."""
    records = read_epic_kitchens_100(data_dir / "moving_digits", "train")[:3]
    bad = tmp_path / "bad.MP4"
    write_bad_video(bad, kind, records[0].path)
    records.append(VideoRecord(bad, 0, 8, {"verb": 0}, "bad"))
    dataset = VideoClipDataset(records, 4, 2, clip_transform(True, crop_size=32), train=True, heads=["verb"])
    with caplog.at_level(logging.WARNING):
        item = dataset[3]
    failed = item["bad"]  # the random replacement may hit the bad video again
    assert item["index"].item() != 3 and failed and set(failed) == {str(bad)}
    assert any(str(bad) in r.getMessage() and "another random training video" in r.getMessage() for r in caplog.records)
    batch = collate_clips([item, dataset[0]])
    assert batch["video"].shape == (2, 3, 4, 32, 32)
    assert batch["bad_files"] == failed

    only_bad = VideoClipDataset(records[3:], 4, 2, clip_transform(True, crop_size=32), train=True, heads=["verb"])
    with pytest.raises(RuntimeError, match=f"training videos in a row failed to decode: {bad}"):
        only_bad[0]


def test_training_counts_bad_videos_over_the_run(tiny_cfg, data_dir: Path, tmp_path: Path, caplog) -> None:
    root, bad = _spoilt(data_dir, tmp_path, "train", 3)
    datamodule, model = build(tiny_cfg(f"data.root={root}", "data.max_bad_videos=0.1"))  # 3 of 48 are allowed
    trainer = _trainer(max_epochs=1, limit_val_batches=0)
    with caplog.at_level(logging.WARNING):
        trainer.fit(model, datamodule=datamodule)
    assert trainer.callback_metrics["train/bad_videos"].item() == 3  # distinct videos: maybe drawn again, counted once
    assert model.bad_videos.bad_files["train"] == set(bad)
    assert any("3 of 48 videos failed to decode" in record.getMessage() for record in caplog.records)

    # the checkpoint holds them (weights_only loads it), and a resumed run goes on from them
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["callbacks"]["BadVideos"] == {"bad_files": {"train": sorted(bad)}}
    resumed = _resume(tiny_cfg(f"data.root={root}"), tmp_path / "last.ckpt")
    assert resumed.bad_files == {"train": set(bad)}

    # a checkpoint written before the callback kept them in the datamodule's state
    checkpoint["VideoDataModule"] = {"bad_files": checkpoint["callbacks"].pop("BadVideos")["bad_files"]}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert _resume(tiny_cfg(f"data.root={root}"), tmp_path / "old.ckpt").bad_files == {"train": set(bad)}


def _resume(cfg, ckpt_path: Path) -> BadVideos:
    """The bad-video account of a run resumed from ``ckpt_path`` (fitting nothing more)."""
    datamodule, model = build(cfg)
    _trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model.bad_videos


def test_bad_video_count_is_the_union_of_marks() -> None:
    """The epoch-end count: a video marked in any update (any process, after the max-reduce) counts once."""
    count = MarkedCount()
    count.update(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    count.update(torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert count.compute() == 3


def test_the_account_takes_in_every_process_marks_at_each_sync() -> None:
    """The marks that Lightning's sync of the counts brings (the element-wise maximum over the processes) join the
    process's own account, so that the checkpoint, which the first process writes, holds every process's."""
    callback, count = BadVideos(), MarkedCount()
    callback.bad_files = {"train": {"a"}}
    callback.counts["train"] = (["a", "b", "c"], count)
    count.update(torch.tensor([1.0, 0.0, 0.0]))
    assert callback.state_dict() == {"bad_files": {"train": ["a"]}}  # not synced yet
    count.marks = torch.tensor([1.0, 0.0, 1.0])  # as the max-reduce over the processes leaves them
    assert count.compute() == 2
    assert callback.state_dict() == {"bad_files": {"train": ["a", "c"]}}


@pytest.mark.slow  # a 2-process run
def test_ddp_run_counts_the_bad_videos_of_every_process(data_dir: Path, tmp_path: Path) -> None:
    """Bad videos that only the second process loads: counted, and in the checkpoint that the first one writes."""
    seen_by_first = set()
    for epoch in (0, 1):
        sampler = EpochSampler(range(48), num_replicas=2, rank=0, seed=42)  # the run's order of clips
        sampler.set_epoch(epoch)
        seen_by_first.update(index for _, index in sampler)
    root, bad = _spoilt(data_dir, tmp_path, "train", sorted(set(range(48)) - seen_by_first)[:3])
    run_dir = tmp_path / "run"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    args = [*TINY_DATA, *TINY_NET, *ddp, "data.batch_size=4", f"data.root={root}", "data.max_bad_videos=0.1"]
    proc = run_script("train", *args, "seed=42", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["train/bad_videos"] == 3
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["BadVideos"]
    assert set(state["bad_files"]["train"]) == set(bad)  # taken in from the second process at the first sync


def test_training_stops_naming_the_files_past_max_bad_videos(tiny_cfg, data_dir: Path, tmp_path: Path) -> None:
    root, bad = _spoilt(data_dir, tmp_path, "train", 3)
    datamodule, model = build(tiny_cfg(f"data.root={root}", "data.max_bad_videos=0.05"))  # 2.4 of 48
    with pytest.raises(ValueError, match=r"3 of the 48 training videos .* data.max_bad_videos=0.05: .*") as caught:
        _trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=datamodule)
    assert all(path in str(caught.value) for path in bad)
    assert check_message(caught.value) == str(caught.value)  # src/train.py ends with it alone, in one line


def test_evaluation_raises_on_a_bad_video_by_default(tiny_cfg, data_dir: Path, tmp_path: Path) -> None:
    root, bad = _spoilt(data_dir, tmp_path, "val", 1)
    datamodule, model = build(tiny_cfg(f"data.root={root}"))
    with pytest.raises(VideoDecodeError, match=Path(bad[0]).name):
        _trainer().validate(model, datamodule=datamodule)


def test_evaluation_can_skip_and_report_bad_videos(tiny_cfg, data_dir: Path, tmp_path: Path, caplog) -> None:
    root, bad = _spoilt(data_dir, tmp_path, "val", 9)  # the whole first batch of 8, and one of the next
    datamodule, model = build(tiny_cfg(f"data.root={root}", "data.skip_bad_eval_videos=true"))
    trainer = _trainer()
    with caplog.at_level(logging.WARNING):
        (val,) = trainer.validate(model, datamodule=datamodule)
        (test,) = trainer.test(model, datamodule=datamodule)  # the tiny data's test split is its validation set
        (again,) = _trainer(limit_val_batches=1).validate(model, datamodule=datamodule)  # 8 of the 9 again
    assert val["val/bad_videos"] == 9 and test["test/bad_videos"] == 9
    assert again["val/bad_videos"] == 9  # so far in the run, not in the epoch
    assert model.bad_videos.bad_files["val"] == model.bad_videos.bad_files["test"] == set(bad)
    assert any(
        "9 of 24 videos failed to decode and are left out, 15 evaluated" in r.getMessage() for r in caplog.records
    )
    assert torch.isfinite(torch.tensor(val["val/loss"]))


@pytest.mark.parametrize(
    ("suffix", "keep", "noise", "reason"),
    [
        (".webm", 1024, False, r"it ends early: its \d+ frames cover [\d.]+ s of the 3.00 s its header declares"),
        (".webm", 1024, True, "the video stream has no frames"),
        (".webm", 0.55, True, "it ends early"),
        (".mp4", 0.55, True, "InvalidDataError"),  # the MP4's index (moov) is at its end
    ],
)
def test_a_video_that_ends_early_is_a_bad_video(suffix, keep, noise: bool, reason: str, tmp_path: Path) -> None:
    """Issue 17.20: a WebM cut short opens with a video stream and fewer frames, or none, and was decoded as a
    short video; a video short by design (its header says so) still is one."""
    write_cut_video(tmp_path / f"cut{suffix}", keep, noise)
    with pytest.raises(VideoDecodeError, match=f"cut{suffix}: {reason}"):
        count_frames(tmp_path / f"cut{suffix}")
    write_video(tmp_path / f"short{suffix}", np.zeros((4, 32, 32, 3), dtype=np.uint8), 12)
    assert count_frames(tmp_path / f"short{suffix}") == 4


@pytest.mark.parametrize("decoder", VIDEO_DECODERS)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_a_variable_frame_rate_video_is_whole_and_its_frames_are_found(
    suffix: str, decoder: str, tmp_path: Path
) -> None:
    """A VFR video with pauses is not taken for one cut short, and frame i is the i-th frame shown, whether the
    decoder seeks or not; the same MKV or WebM cut short is named, by either decoder (torchcodec alone would take
    it for a shorter video)."""
    path = tmp_path / f"vfr{suffix}"
    write_vfr_video(path)
    assert count_frames(path, decoder) == len(VFR_TIMES_MS)
    indices = [0, 3, 6, 10, 17, 18]
    frames = decode_frames(path, indices, decoder)  # (T, H, W, 3)
    assert np.abs(frames.mean(axis=(1, 2, 3)) - 10 * np.array(indices)).max() < 3
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.8)])  # MKV: 8 of its 19 frames left, WebM: 12
    reason = "" if suffix == ".mp4" else "it ends early"  # a cut MP4 has lost its index (at its end): it won't open
    with pytest.raises(VideoDecodeError, match=f"vfr{suffix}: {reason}"):
        count_frames(path, decoder)
    with pytest.raises(VideoDecodeError, match=f"vfr{suffix}: {reason}"):
        decode_frames(path, [0], decoder)  # the frames it still has: a dataset need not count them first


@pytest.mark.parametrize("decoder", VIDEO_DECODERS)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_a_video_whose_last_frame_stays_on_screen_is_whole(suffix: str, decoder: str, tmp_path: Path) -> None:
    """A screen recording or slideshow that ends on a frame shown for 3 s declares 3 s more than its last frame's
    timestamp: it is whole, not cut short, and its last frame is found."""
    path = tmp_path / f"long_last{suffix}"
    write_vfr_video(path, [33 * i for i in range(10)], last_ms=3000)
    assert count_frames(path, decoder) == 10
    assert np.abs(decode_frames(path, [0, 9], decoder).mean(axis=(1, 2, 3)) - [0, 90]).max() < 3


def test_a_video_that_ends_early_is_named_in_evaluation(tmp_path: Path, caplog) -> None:
    """Issue 17.20: eval on an SSv2 root with one test WebM cut to its first 1,024 bytes (14 of its 36 frames
    left) raises naming it, or, with data.skip_bad_eval_videos=true, evaluates the other video and counts it."""
    from test_datasets import write_ssv2

    root = tmp_path / "ssv2"
    write_ssv2(root)
    cut = root / "20bn-something-something-v2" / "9001.webm"
    write_cut_video(cut, 1024)
    small = ["data.num_frames=4", "data.crop_size=32", "data.min_resize=null", "data.batch_size=2"]
    overrides = ["data=ssv2", f"data.root={root}", *small, "data.num_workers=0", "model=factorised_encoder", *TINY_NET]
    datamodule, model = build(compose_config("train", overrides, tmp_path))
    with pytest.raises(VideoDecodeError, match=f"{cut}: it ends early"):
        _trainer().test(model, datamodule=datamodule)
    datamodule, model = build(compose_config("train", [*overrides, "data.skip_bad_eval_videos=true"], tmp_path))
    with caplog.at_level(logging.WARNING):
        (test,) = _trainer().test(model, datamodule=datamodule)
    assert test["test/bad_videos"] == 1 and test["test/videos"] == 1
    assert any(f"{cut}: it ends early" in r.getMessage() for r in caplog.records)
