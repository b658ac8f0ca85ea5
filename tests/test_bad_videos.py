"""Videos that fail to decode: replaced and counted in training, with a limit; raised or left out in evaluation."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import write_bad_video
from vivit.data import VideoDecodeError, read_epic_kitchens_100
from vivit.data.clips import VideoClipDataset, collate_clips
from vivit.data.transforms import clip_transform
from vivit.pipeline import build
from vivit.training.video_classifier import MarkedCount

KINDS = ("truncated", "empty", "no_video")


def _spoilt(data_dir: Path, dest: Path, split: str, count: int) -> tuple[Path, list[str]]:
    """A copy of the tiny built-in dataset whose first ``count`` videos of ``split`` cannot be decoded."""
    root = dest / "moving_digits"
    shutil.copytree(data_dir / "moving_digits", root)
    records = read_epic_kitchens_100(root, split)
    assert len({r.path for r in records}) == len(records)  # one segment per video file
    good = records[-1].path
    for i, record in enumerate(records[:count]):
        write_bad_video(record.path, KINDS[i % len(KINDS)], good)
    return root, [str(r.path) for r in records[:count]]


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_training_replaces_a_bad_video_and_lists_it(kind: str, data_dir: Path, tmp_path: Path) -> None:
    records = read_epic_kitchens_100(data_dir / "moving_digits", "train")[:3]
    write_bad_video(tmp_path / "bad.MP4", kind, records[0].path)
    records.append(records[0].__class__(tmp_path / "bad.MP4", 0, 8, {"verb": 0}, "bad"))
    dataset = VideoClipDataset(records, 4, 2, clip_transform(True, crop_size=32), train=True, heads=["verb"])
    item = dataset[3]
    failed = item["bad"]  # the random replacement may hit the bad video again
    assert item["index"].item() != 3 and failed and set(failed) == {str(tmp_path / "bad.MP4")}
    batch = collate_clips([item, dataset[0]])
    assert batch["video"].shape == (2, 3, 4, 32, 32)
    assert batch["bad_videos"].item() == len(failed) and batch["bad_files"] == failed


def test_training_counts_bad_videos_over_the_run(tiny_cfg, data_dir: Path, tmp_path: Path, caplog) -> None:
    root, bad = _spoilt(data_dir, tmp_path, "train", 3)
    datamodule, model = build(tiny_cfg(f"data.root={root}", "data.max_bad_videos=0.1"))  # 3 of 48 are allowed
    trainer = _trainer(max_epochs=1, limit_val_batches=0)
    with caplog.at_level(logging.WARNING):
        trainer.fit(model, datamodule=datamodule)
    assert trainer.callback_metrics["train/bad_videos"].item() == 3  # distinct videos: maybe drawn again, counted once
    assert datamodule.bad_files["train"] == set(bad)
    assert any("3 of 48 videos failed to decode" in record.getMessage() for record in caplog.records)

    # the checkpoint holds them (weights_only loads it), and a resumed run goes on from them
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["VideoDataModule"]
    assert state == {"bad_files": {"train": sorted(bad)}}
    resumed, _ = build(tiny_cfg(f"data.root={root}"))
    resumed.load_state_dict(state)
    assert resumed.bad_files == {"train": set(bad)}
    resumed.setup("fit")
    assert resumed.bad_video_marks("train").sum() == 3 and resumed.bad_video_marks("val").sum() == 0


def test_bad_video_count_is_the_union_of_marks() -> None:
    """The epoch-end count: a video marked in any update (any process, after the max-reduce) counts once."""
    count = MarkedCount()
    count.update(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    count.update(torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert count.compute() == 3


def test_training_stops_naming_the_files_past_max_bad_videos(tiny_cfg, data_dir: Path, tmp_path: Path) -> None:
    root, bad = _spoilt(data_dir, tmp_path, "train", 3)
    datamodule, model = build(tiny_cfg(f"data.root={root}", "data.max_bad_videos=0.05"))  # 2.4 of 48
    with pytest.raises(RuntimeError, match=r"3 of the 48 training videos .* data.max_bad_videos=0.05") as caught:
        _trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=datamodule)
    assert all(path in str(caught.value) for path in bad)


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
    assert datamodule.bad_files["val"] == datamodule.bad_files["test"] == set(bad)
    assert any(
        "9 of 24 videos failed to decode and are left out, 15 evaluated" in r.getMessage() for r in caplog.records
    )
    assert torch.isfinite(torch.tensor(val["val/loss"]))
