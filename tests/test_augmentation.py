"""The paper's training augmentation: scale jitter, crop, flip, colour jitter and RandAugment, one draw per clip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from vivit.data import VideoDataModule
from vivit.data.photometric import ClipRandAugment, Photometric, adjust_hue
from vivit.data.transforms import clip_transform

EVERYTHING = dict(
    crop_size=24,
    min_resize=30,
    scale_jitter=(0.9, 1.33),
    hflip_prob=0.5,
    colour_jitter_prob=1.0,
    colour_drop_prob=0.5,
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


@pytest.mark.parametrize("op", list(ClipRandAugment.OPS))
def test_each_randaugment_op_is_the_same_on_every_frame(op: str) -> None:
    ra = ClipRandAugment(1, 15)
    frame = torch.randint(0, 256, (1, 1, 3, 40, 48), dtype=torch.uint8)
    video = frame.expand(2, 4, 3, 40, 48).clone()  # (B, T, C, H, W) uint8
    boxes = [(5, 7, 10, 12), (0, 30, 20, 18)]
    out = ra.run(op, video, [(ra.argument(op), box if op == "Cutout" else None) for box in boxes])
    assert out.dtype == torch.uint8 and out.shape == video.shape
    assert (out == out[:, :1]).all()
    unchanged = ("Identity", "AutoContrast", "Solarize")  # noise already spans 0-255; level 15 solarizes nothing
    assert torch.equal(out, video) == (op in unchanged)
    if op == "Cutout":  # each clip its own square
        assert (out[0, ..., 5:15, 7:19] == 128).all() and (out[1, ..., 0:20, 30:48] == 128).all()
        assert not (out[0, ..., 0:20, 30:48] == 128).all()


def test_a_batch_of_clips_is_augmented_as_each_clip_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batched ops (each op on all the clips that drew it at that step, as on a GPU) give each clip exactly what
    its own draws give it alone, as in a loader worker: clips with and without colour jitter and colour drop,
    RandAugment with Cutout, none."""
    monkeypatch.setattr("vivit.data.photometric.CPU_CHUNK", 10**6)  # the GPU's batched path, here on the CPU
    photometric = Photometric(
        colour_jitter_prob=0.7, colour_drop_prob=0.3, randaugment_layers=2, randaugment_magnitude=15
    )
    generator = torch.Generator().manual_seed(2)
    video = torch.randint(0, 256, (12, 6, 3, 20, 24), dtype=torch.uint8, generator=generator)
    torch.manual_seed(3)
    params = [photometric.draw(20, 24) for _ in range(11)] + [None]
    assert any(p["colour"] is None for p in params[:-1]) and any(p["colour"] is not None for p in params[:-1])
    assert any(p["drop"] for p in params[:-1]) and not all(p["drop"] for p in params[:-1])
    assert len({tuple(op for op, *_ in p["randaugment"]) for p in params[:-1]}) > 5
    given = video.clone()
    batch = photometric.apply(video, params)
    assert torch.equal(video, given)  # the caller's clips are not written to
    for clip, p in enumerate(params):
        alone = photometric.apply(video[clip : clip + 1], [p])[0]
        assert torch.equal(batch[clip], alone), clip
    assert torch.equal(batch[-1], video[-1])
    monkeypatch.undo()  # and the CPU's path, clip by clip in chunks of frames, gives the same
    assert torch.equal(photometric.apply(video, params), batch)


def test_randaugment_magnitude_is_the_papers_scale() -> None:
    """Level L of tensorflow/models (the paper's 15 and 20) -> each op's argument, as in TF's level_to_arg."""
    args = {op: ClipRandAugment(2, 15).argument(op) for op in ClipRandAugment.OPS}
    assert args["Brightness"] + 1 == pytest.approx(2.8)  # 0.1 + 1.8 * 15 / 10 (the op adds 1)
    assert (args["Posterize"], args["Solarize"], args["SolarizeAdd"], args["Cutout"]) == (6, 384, 165, 60)
    assert ClipRandAugment(2, 20).argument("Color") + 1 == pytest.approx(3.7)
    assert len(ClipRandAugment.OPS) == 12  # identity and Scenic's 11 ops
    assert not any(op in ClipRandAugment.OPS for op in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"))


def test_hue_is_torchvisions_up_to_float_rounding() -> None:
    """The faster hue rotation gives torchvision's adjust_hue, but for a value that float rounding tips over an
    integer (1 off, rarely); grey pixels and ties for the maximum channel included."""
    frames = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    frames[0] = frames[0, :1]  # grey
    frames[1, 1] = frames[1, 0]  # red and green equal
    frames[2, 2] = frames[2, 1]  # green and blue equal
    for factor in (-0.5, -0.2, -0.05, 0.0, 0.13, 0.2, 0.5):
        ours, theirs = adjust_hue(frames, factor).int(), F.adjust_hue(frames, factor).int()
        assert (ours - theirs).abs().max() <= 1 and (ours != theirs).float().mean() < 1e-3, factor
        assert torch.equal(ours[0], theirs[0])


def test_colour_jitter_is_torchvisions_up_to_float_rounding() -> None:
    """Colour jitter applies torchvision's ColorJitter draw: its ops in its order, with the faster hue."""
    frames = torch.randint(0, 256, (6, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    photometric = Photometric(colour_jitter_prob=1.0)
    for seed in range(10):
        torch.manual_seed(seed)
        params = photometric.draw(48, 48)
        ours = photometric.apply(frames[None], [params])[0].int()
        theirs = photometric.colour_jitter.transform(tv_tensors.Video(frames), params["colour"]).int()
        assert (ours - theirs).abs().max() <= 1 and (ours != theirs).float().mean() < 1e-3, seed


def test_colour_drop_is_torchvisions_grayscale_of_the_jittered_clip() -> None:
    """Colour drop (DMVR's prob_color_drop) turns the clip grey after its colour jitter, exactly as torchvision's
    Grayscale(3) turns the jittered uint8 clip; it is drawn apart from the jitter, with its own probability."""
    frames = torch.randint(0, 256, (4, 3, 32, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    photometric = Photometric(colour_jitter_prob=0.8, colour_drop_prob=1.0)
    for seed in range(6):
        torch.manual_seed(seed)
        params = photometric.draw(32, 40)
        jittered = photometric.apply(frames[None], [dict(params, drop=False)])[0]
        dropped = photometric.apply(frames[None], [params])[0]
        assert torch.equal(dropped, F.rgb_to_grayscale(jittered, num_output_channels=3)), seed
    torch.manual_seed(0)
    sometimes = Photometric(colour_jitter_prob=0.8, colour_drop_prob=0.1)
    draws = [sometimes.draw(32, 40) for _ in range(2000)]
    assert 0.08 < sum(d["drop"] for d in draws) / len(draws) < 0.12
    assert 0.78 < sum(d["colour"] is not None for d in draws) / len(draws) < 0.82


def test_evaluation_and_switched_off_augmentation() -> None:
    frames = torch.randint(0, 256, (2, 36, 40, 3), dtype=torch.uint8)
    evaluation = clip_transform(False, **EVERYTHING)  # resize + centre crop only
    assert torch.equal(evaluation(frames), evaluation(frames))
    off = dict(EVERYTHING, scale_jitter=None, hflip_prob=0.0, colour_jitter_prob=0.0, colour_drop_prob=0.0)
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
    ("key", "value"),
    [
        ("scale_jitter", (1.2, 0.9)),
        ("scale_jitter", (0.9,)),
        ("colour_jitter_prob", 1.5),
        ("colour_drop_prob", -0.1),
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
