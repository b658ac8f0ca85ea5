"""The built-in dataset: handwritten digits moving over textured backgrounds.

Each clip shows one digit from ``sklearn.datasets.load_digits`` (the noun) doing one motion (the verb).
Paired verbs (left/right, up/down, grow/shrink) are exact time reverses in distribution, so a model
that ignores frame order is at chance within each pair. Clips are written as real H.264 video in the
exact EPIC-KITCHENS-100 layout (dataset_formats.md §4), one segment spanning each whole video, so the
same reader and datamodule serve this dataset and the real one.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

VERBS = ("move-left", "move-right", "move-up", "move-down", "grow", "shrink")
NOUNS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
EPIC_HEADER = ["narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp", "stop_timestamp"]
EPIC_HEADER += ["start_frame", "stop_frame", "narration", "verb", "verb_class", "noun", "noun_class", "all_nouns"]
EPIC_HEADER += ["all_noun_classes"]
MARKER = "moving_digits.json"
_FORMAT_VERSION = 2  # bump when the rendering changes, so old copies are regenerated
_VIDEO_NAME = re.compile(r"P\d\d_\d\d\.MP4")
_VIDEOS_PER_PARTICIPANT = 99  # video ids P{pp}_{vv} with vv in 01..99, as EPIC-55


@dataclass(frozen=True)
class Motion:
    """Sprite centre and side length (pixels) at the first and last frame; linear in between."""

    x: tuple[float, float]
    y: tuple[float, float]
    side: tuple[float, float]

    def reversed(self) -> Motion:
        return Motion(self.x[::-1], self.y[::-1], self.side[::-1])

    def at(self, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-frame (x, y, side), each (T,)."""
        t = np.linspace(0.0, 1.0, num_frames)
        return tuple(a + (b - a) * t for a, b in (self.x, self.y, self.side))  # type: ignore[return-value]


def sample_motion(verb: int, size: int, rng: np.random.Generator) -> Motion:
    """Draw a motion for ``verb`` in a ``size``×``size`` frame.

    The forward motion of each pair (right, down, grow) is drawn, and its partner is that motion reversed,
    so e.g. move-left is move-right played backwards, in distribution. The draws do not depend on the verb.
    """
    move_side = rng.uniform(0.33, 0.42) * size  # ~12-15 px at 36 px
    near = rng.uniform(0.0, 0.12) * size  # start offset from the near edge
    far = rng.uniform(0.0, 0.12) * size  # end offset from the far edge
    across = rng.uniform(0.0, 1.0)  # position on the other axis, as a fraction of the free range
    small, large = rng.uniform(0.22, 0.3) * size, rng.uniform(0.45, 0.55) * size
    grow_x, grow_y = rng.uniform(0.0, 1.0, size=2)

    m = move_side / 2 + 1  # keep the whole sprite inside the frame
    start, end = m + near, size - m - far
    other = m + across * (size - 2 * m)
    if verb in (0, 1):
        forward = Motion((start, end), (other, other), (move_side, move_side))
    elif verb in (2, 3):
        forward = Motion((other, other), (start, end), (move_side, move_side))
    elif verb in (4, 5):
        g = large / 2 + 1
        cx, cy = g + grow_x * (size - 2 * g), g + grow_y * (size - 2 * g)
        forward = Motion((cx, cx), (cy, cy), (small, large))
    else:
        raise ValueError(f"verb must be in 0..{len(VERBS) - 1}, got {verb}")
    return forward.reversed() if verb in (0, 2, 5) else forward


def _interp_weights(coords: np.ndarray, n: int, clamp: bool = False) -> np.ndarray:
    """Linear-interpolation weights (..., n) sampling a length-``n`` axis at ``coords`` (...,).

    Outside the axis the weights are 0 (transparent), or the edge is repeated when ``clamp``.
    """
    if clamp:
        coords = np.clip(coords, 0, n - 1)
    i0 = np.floor(coords)[..., None]
    f = coords[..., None] - i0
    grid = np.arange(n)
    return (grid == i0) * (1 - f) + (grid == i0 + 1) * f  # neighbours outside the axis simply get no weight


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (h, w, C) to (size, size, C), edge-clamped."""
    h, w = image.shape[:2]
    centres = np.arange(size) + 0.5
    wy = _interp_weights(centres * h / size - 0.5, h, clamp=True)  # (size, h)
    wx = _interp_weights(centres * w / size - 0.5, w, clamp=True)  # (size, w)
    return np.einsum("yh,hwc,xw->yxc", wy, image, wx, optimize=True)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random texture (H, W, 3) in [0, 1]: a dark base, low-frequency noise and a few soft blobs.

    Kept darker and lower in contrast than the sprite: with the clutter as bright as the digit, a
    small ViT trained from scratch stayed at chance for many epochs.
    """
    base = rng.uniform(0.05, 0.3, size=3)
    noise = _resize(rng.uniform(-0.1, 0.1, size=(6, 6, 3)), size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    image = base + noise
    for _ in range(3):
        cy, cx = rng.uniform(0, size, size=2)
        radius = rng.uniform(0.1, 0.25) * size
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        image += blob[..., None] * rng.uniform(-0.1, 0.1, size=3)
    return np.clip(image, 0.0, 1.0)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A bright RGB colour in [0, 1]: one channel full, the others at least 0.6 and 0.3."""
    c = np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.3, 1.0)])
    return c[rng.permutation(3)]


def sprite_alpha(image: np.ndarray, x: np.ndarray, y: np.ndarray, side: np.ndarray, size: int) -> np.ndarray:
    """The (n, n) sprite (intensity in [0, 1]) centred at (x, y) with side ``side`` (pixels; each (T,)) in a
    ``size``×``size`` frame: its alpha, (T, size, size, 1)."""
    centres = np.arange(size) + 0.5
    n = image.shape[0]
    # Pixel centre -> sprite-pixel coordinate; the sprite's n cells span `side` pixels around the centre.
    wx = _interp_weights((centres[None] - x[:, None]) / side[:, None] * n + n / 2 - 0.5, n)  # (T, W, n)
    wy = _interp_weights((centres[None] - y[:, None]) / side[:, None] * n + n / 2 - 0.5, n)  # (T, H, n)
    return np.clip(1.25 * (wy @ image @ wx.transpose(0, 2, 1)), 0.0, 1.0)[..., None]


def render_clip(
    digit: np.ndarray, motion: Motion, colour: np.ndarray, background: np.ndarray, num_frames: int
) -> np.ndarray:
    """Composite the (8, 8) digit (intensity in [0, 1] = alpha) over the background: uint8 (T, H, W, 3)."""
    alpha = sprite_alpha(digit, *motion.at(num_frames), background.shape[0])  # (T, H, W, 1)
    frames = background[None] * (1 - alpha) + colour * alpha
    return np.round(frames * 255).astype(np.uint8)


_CODECS = {"mp4": ("libx264", "h264", "libopenh264", "mpeg4"), "webm": ("libvpx-vp9", "libvpx")}


def _pick_codec(container: str = "mp4") -> str:
    for codec in _CODECS[container]:
        if codec in av.codecs_available:
            return codec
    raise RuntimeError(f"PyAV has no encoder for {container} (tried {', '.join(_CODECS[container])})")


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames as yuv420p H.264 (or MPEG-4) in mp4, or as VP9 (or VP8) in
    WebM when ``path`` ends in .webm (Something-Something v2's format)."""
    container_format = "webm" if path.suffix.lower() == ".webm" else "mp4"
    codec = _pick_codec(container_format)
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1  # as repeatable as the encoder allows (and _yuv420p)
        if codec == "libx264":
            stream.options = {"crf": "15", "preset": "fast"}
        elif codec == "mpeg4":
            stream.codec_context.qscale = 2
        elif codec.startswith("libvpx"):
            stream.options = {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        for image in frames:
            container.mux(stream.encode(_yuv420p(image)))
        container.mux(stream.encode())


def _yuv420p(image: np.ndarray) -> av.VideoFrame:
    """The uint8 (H, W, 3) RGB image as a yuv420p frame, converted before the encoder sees it: handed RGB frames,
    libx264 encoded the same frames differently from run to run in up to half the videos (decoding 1-2 grey
    levels apart on average); converted first, rarely (seen once in a full test run)."""
    yuv = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p").to_ndarray()
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")


def _timestamp(seconds: float, decimals: int) -> str:
    """EPIC's HH:MM:SS.ss (2 decimals: start/stop) or HH:MM:SS.sss (3: narration)."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:0{3 + decimals}.{decimals}f}"


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Columns in the order of the first row's keys; the csv module quotes lists that contain commas."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def generate_moving_digits(
    root: str | Path,
    *,
    num_train: int = 1200,
    num_val: int = 300,
    num_frames: int = 16,
    size: int = 36,
    fps: int = 60,
    seed: int = 0,
) -> None:
    """Write the dataset under ``root``; skipped when ``root/moving_digits.json`` records the same parameters.

    With other parameters the generator's own files (annotations, ``P??/videos/P??_??.MP4``, marker) are
    replaced; nothing else under ``root`` is touched.
    """
    params = dict(num_train=num_train, num_val=num_val, num_frames=num_frames, size=size, fps=fps, seed=seed)
    params.update(version=_FORMAT_VERSION)
    if not up_to_date(root, params):
        clips = _moving_digit_clips(num_train, num_val, num_frames, size, np.random.default_rng(seed))
        write_dataset(root, params, clips, (VERBS, "motion"), (NOUNS, "digit"))


def _moving_digit_clips(
    num_train: int, num_val: int, num_frames: int, size: int, rng: np.random.Generator
) -> Iterator[tuple[str, np.ndarray, int, int]]:
    """(split, uint8 (T, H, W, 3) frames, verb, noun) of every clip: one digit doing one motion."""
    images, targets, pools = digit_pools()
    for split, verb in balanced_verbs(num_train, num_val, len(VERBS), rng):
        image_id = int(rng.choice(pools[split]))
        background = _background(size, rng)
        colour = _colour(rng)
        motion = sample_motion(verb, size, rng)
        yield split, render_clip(images[image_id], motion, colour, background, num_frames), verb, targets[image_id]


def balanced_verbs(num_train: int, num_val: int, num_verbs: int, rng: np.random.Generator) -> Iterator[tuple[str, int]]:
    """(split, verb) of every clip, training first: each split's verbs balanced, in an order drawn as it starts."""
    for split, count in (("train", num_train), ("val", num_val)):
        for verb in rng.permutation(np.arange(count) % num_verbs):
            yield split, int(verb)


def digit_pools() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """scikit-learn's 1,797 handwritten digits: (N, 8, 8) intensities in [0, 1], their (N,) digits, and the
    indices each split draws from (training the first half, validation the second: no digit image in both)."""
    from sklearn.datasets import load_digits  # ships with scikit-learn, no download

    digits = load_digits()
    half = len(digits.images) // 2
    return digits.images / 16.0, digits.target, {"train": np.arange(half), "val": np.arange(half, len(digits.images))}


def up_to_date(root: str | Path, params: dict) -> bool:
    """Whether ``root`` holds a generation with exactly ``params`` (its marker file records them)."""
    marker = Path(root) / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        log.debug("moving digits in %s are up to date", root)
        return True
    return False


def write_dataset(
    root: str | Path,
    params: dict,
    clips: Iterable[tuple[str, np.ndarray, int, int]],
    verbs: tuple[Sequence[str], str],
    nouns: tuple[Sequence[str], str],
) -> None:
    """Write generated ``clips`` (split, uint8 (T, H, W, 3) frames, verb, noun; training clips first) under
    ``root`` in the EPIC-KITCHENS-100 layout, one segment spanning each video; ``verbs`` and ``nouns``: the class
    names and their category. ``params`` (``num_train``, ``num_val``, ``num_frames``, ``size``, ``fps``, ...)
    are recorded in the marker file, written last, so that an interrupted generation does not look complete.
    The generator's own earlier files that this one does not rewrite are removed; nothing else is touched."""
    root = Path(root)
    num_frames, size, fps = params["num_frames"], params["size"], params["fps"]
    if size % 2 or size < 8:
        raise ValueError(f"size must be even and >= 8 (yuv420p), got {size}")
    if num_frames < 2 or params["num_train"] < 1 or params["num_val"] < 1 or fps < 1:
        raise ValueError(f"need num_frames >= 2 and num_train, num_val, fps >= 1, got {params}")
    total = params["num_train"] + params["num_val"]
    if total > 99 * _VIDEOS_PER_PARTICIPANT:
        raise ValueError(f"at most {99 * _VIDEOS_PER_PARTICIPANT} clips fit the P01_01..P99_99 ids, got {total}")

    log.info("Generating %d moving-digit clips in %s", total, root)
    began = time.perf_counter()
    marker = root / MARKER
    had_marker = marker.is_file()
    marker.unlink(missing_ok=True)  # an interrupted run must not look complete
    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    duration = num_frames / fps
    rows: dict[str, list[dict]] = {"train": [], "val": []}
    info_rows, written = [], set()
    for index, (split, frames, verb, noun) in enumerate(clips):
        participant, video = divmod(index, _VIDEOS_PER_PARTICIPANT)
        pid = f"P{participant + 1:02d}"
        vid = f"{pid}_{video + 1:02d}"
        path = root / pid / "videos" / f"{vid}.MP4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, frames, fps)
        written.add(path)

        verb_name, noun_name = verbs[0][verb], nouns[0][noun]
        rows[split].append(
            dict(
                narration_id=f"{vid}_0",
                participant_id=pid,
                video_id=vid,
                narration_timestamp=_timestamp(0, 3),
                start_timestamp=_timestamp(0, 2),
                stop_timestamp=_timestamp(duration, 2),
                start_frame=1,
                stop_frame=num_frames,
                narration=f"{verb_name} {noun_name}",
                verb=verb_name,
                verb_class=int(verb),
                noun=noun_name,
                noun_class=int(noun),
                all_nouns=str([noun_name]),
                all_noun_classes=str([int(noun)]),
            )
        )
        info_rows.append(dict(video_id=vid, duration=duration, fps=float(fps), resolution=f"{size}x{size}"))

    if had_marker:  # drop videos of the previous generation that this one did not rewrite
        for stale in root.glob("P*/videos/*.MP4"):
            if _VIDEO_NAME.fullmatch(stale.name) and stale not in written:
                stale.unlink()
    _write_csv(annotations / "EPIC_100_train.csv", rows["train"])
    _write_csv(annotations / "EPIC_100_validation.csv", rows["val"])
    for kind, (names, category) in (("verb", verbs), ("noun", nouns)):
        classes = [dict(id=i, key=name, instances=str([name]), category=category) for i, name in enumerate(names)]
        _write_csv(annotations / f"EPIC_100_{kind}_classes.csv", classes)
    _write_csv(annotations / "EPIC_100_video_info.csv", info_rows)
    marker.write_text(json.dumps(params, indent=2) + "\n")
    log.info("Generated %d clips in %.1f s", total, time.perf_counter() - began)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Generate the moving-digits dataset (EPIC-KITCHENS-100 layout).")
    parser.add_argument("root", type=Path)
    parser.add_argument("--num-train", type=int, default=1200)
    parser.add_argument("--num-val", type=int, default=300)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=36)
    parser.add_argument("--fps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate_moving_digits(
        args.root,
        num_train=args.num_train,
        num_val=args.num_val,
        num_frames=args.num_frames,
        size=args.size,
        fps=args.fps,
        seed=args.seed,
    )
