"""The paper's training augmentation: scale jitter, crop, flip, colour jitter and RandAugment, one draw per clip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors

from conftest import compose_config
from vivit.data import VideoDataModule
from vivit.data.transforms import ClipRandAugment, clip_transform

EVERYTHING = dict(
    crop_size=24,
    min_resize=30,
    scale_jitter=(0.9, 1.33),
    hflip_prob=0.5,
    colour_jitter_prob=1.0,
    randaugment_layers=2,
    randaugment_magnitude=20,
)


def test_every_frame_gets_the_same_random_ops() -> None:
    """The clip's frames come out as each frame would alone with the same random draws: one crop, flip,
    colour jitter and RandAugment for the whole clip."""
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (4, 36, 40, 3), dtype=torch.uint8)  # (T, H, W, C), every frame different
    transform = clip_transform(True, **EVERYTHING)
    outputs = []
    for seed in range(8):
        torch.manual_seed(seed)
        clip = transform(frames)  # (C, T, H, W)
        assert clip.shape == (3, 4, 24, 24) and clip.dtype == torch.float32
        for t in range(4):
            torch.manual_seed(seed)
            torch.testing.assert_close(clip[:, t], transform(frames[t : t + 1])[:, 0])
        outputs.append(clip)
    assert len({tuple(o.flatten()[:64].tolist()) for o in outputs}) == 8  # and each clip gets its own draw


@pytest.mark.parametrize("op", list(ClipRandAugment._AUGMENTATION_SPACE))
def test_each_randaugment_op_is_the_same_on_every_frame(op: str) -> None:
    ra = ClipRandAugment(1, 15)
    frame = torch.randint(0, 256, (1, 3, 40, 48), dtype=torch.uint8)
    video = tv_tensors.Video(frame.expand(4, 3, 40, 48).clone())  # (T, C, H, W) uint8
    magnitudes = ra._AUGMENTATION_SPACE[op][0](ra.num_magnitude_bins, 40, 48)
    magnitude = 0.0 if magnitudes is None else float(magnitudes[ra.magnitude])
    out = ra.apply(video, [(op, magnitude, (5, 7, 10, 12) if op == "Cutout" else None)])
    assert isinstance(out, tv_tensors.Video) and out.dtype == torch.uint8 and out.shape == video.shape
    assert (out == out[:1]).all()
    unchanged = ("Identity", "AutoContrast", "Solarize")  # noise already spans 0-255; level 15 solarizes nothing
    assert torch.equal(out, video) == (op in unchanged)


def test_randaugment_magnitude_is_the_papers_scale() -> None:
    """Level L of tensorflow/models (the paper's 15 and 20) -> each op's argument, as in TF's level_to_arg."""
    space = ClipRandAugment._AUGMENTATION_SPACE
    args = {op: float(fn(21, 8, 8)[15]) for op, (fn, _) in space.items() if fn(21, 8, 8) is not None}
    assert args["Brightness"] + 1 == pytest.approx(2.8)  # 0.1 + 1.8 * 15 / 10 (torchvision adds 1)
    assert (args["Posterize"], args["Solarize"], args["SolarizeAdd"], args["Cutout"]) == (6, 384, 165, 60)
    assert float(space["Color"][0](21, 8, 8)[20]) + 1 == pytest.approx(3.7)
    assert not any(op in space for op in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"))


def test_evaluation_and_switched_off_augmentation() -> None:
    frames = torch.randint(0, 256, (2, 36, 40, 3), dtype=torch.uint8)
    evaluation = clip_transform(False, **EVERYTHING)  # resize + centre crop only
    assert torch.equal(evaluation(frames), evaluation(frames))
    off = dict(EVERYTHING, scale_jitter=None, hflip_prob=0.0, colour_jitter_prob=0.0)
    for switched_off in (dict(off, randaugment_layers=0), dict(off, randaugment_magnitude=None)):
        transform = clip_transform(True, **switched_off)
        assert not transform.photometric and transform.prepare(frames)[1] is None  # resize and random crop only
        assert transform.geometry.resized_size(36, 40) == (30, 33)


def test_scale_jitter_scales_height_and_width_independently() -> None:
    transform = clip_transform(True, crop_size=24, min_resize=40, scale_jitter=(0.9, 1.33), hflip_prob=0.0)
    sizes = [transform.geometry.resized_size(40, 60) for _ in range(50)]  # the crop is drawn on this grid
    heights, widths = zip(*sizes, strict=True)
    assert min(heights) >= 36 and max(heights) <= 54 and min(widths) >= 54 and max(widths) <= 80
    ratios = {round(w / h, 2) for h, w in sizes}
    assert len(ratios) > 10  # the aspect ratio changes too


@pytest.mark.parametrize(
    ("config", "regularisation", "settings"),
    [  # (scale_jitter, hflip_prob, colour_jitter_prob, RandAugment layers, magnitude): Table 7
        ("kinetics400", "none", ([0.9, 1.33], 0.5, 0.8, 0, 0)),
        ("kinetics600", "none", ([0.9, 1.33], 0.5, 0.8, 0, 0)),
        ("moments_in_time", "none", ([0.9, 1.33], 0.5, 0.8, 0, 0)),
        ("epic_kitchens_100", "epic_kitchens", ([0.9, 1.33], 0.5, 0.0, 2, 15)),
        ("ssv2", "ssv2", ([0.9, 1.33], 0.0, 0.0, 2, 20)),
        ("moving_digits", "none", (None, 0.0, 0.0, 0, 0)),  # the built-in data: as before, left/right are classes
    ],
)
def test_dataset_configs_set_the_papers_augmentation(
    config: str, regularisation: str, settings: tuple, tmp_path: Path
) -> None:
    """The data's own augmentation per dataset; RandAugment comes from the paper's regularisation preset."""
    overrides = [f"data={config}", "data.root=/x", f"regularisation={regularisation}"]
    d = compose_config("train", overrides, tmp_path).data
    jitter = None if d.scale_jitter is None else list(d.scale_jitter)
    assert (jitter, d.hflip_prob, d.colour_jitter_prob, d.randaugment_layers, d.randaugment_magnitude) == settings
    assert d.max_bad_videos == 0.01 and d.skip_bad_eval_videos is False


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("scale_jitter", (1.2, 0.9)),
        ("scale_jitter", (0.9,)),
        ("colour_jitter_prob", 1.5),
        ("randaugment_layers", -1),
        ("randaugment_magnitude", -3),
        ("max_bad_videos", 2.0),
    ],
)
def test_data_module_rejects_bad_augmentation_settings(key: str, value, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"data.{key}"):
        VideoDataModule(
            root=str(tmp_path), annotations=lambda root, split: [], heads={"y": 2}, num_frames=2, **{key: value}
        )
