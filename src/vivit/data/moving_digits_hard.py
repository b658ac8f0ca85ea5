"""The harder built-in dataset (``data=moving_digits_hard``): two handwritten digits in a cluttered scene that
pans and shakes, whose six classes come in three pairs that differ only in what the paper's models differ in.

=====================  ==========================================================================================
class                  what tells it from its partner
=====================  ==========================================================================================
left-moves-first       both digits move (up or down) once, one after the other: the order of two events.
right-moves-first      Exactly a left-moves-first scene played backwards (every frame, clutter and camera too).
goes-right-and-back    one digit goes out and comes back (the other stays still): a direction that reverses
goes-left-and-back     mid-clip. The two share the frames: goes-left-and-back is goes-right-and-back with the
                       moving digit's trajectory started half-way, so the digit's positions are the same set.
passes-in-front        one digit crosses a still one, drawn over it or under it: the two differ only in the
passes-behind          frames where the digits overlap (spatio-temporal interaction).
=====================  ==========================================================================================

So a model that ignores frame order (one that averages its frames) is at chance within the first two pairs.
Everything else is drawn the same way for every class: two 1-2 px/frame distractor sprites, a textured background
that pans, and a camera that shakes by up to one pixel per frame. The noun is the identity (0-9) of the digit that
the verb is about: the one that moves first, the one that goes and comes back, the one that passes
(``data.heads='{verb: 6, noun: 10}'`` for two heads). Written as the easy dataset is
(:func:`vivit.data.moving_digits.write_dataset`: H.264 in the EPIC-KITCHENS-100 layout).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vivit.data.moving_digits import (
    NOUNS,
    _background,
    _colour,
    balanced_verbs,
    digit_pools,
    sprite_alpha,
    up_to_date,
    write_dataset,
)

VERBS = (
    "left-moves-first",
    "right-moves-first",
    "goes-right-and-back",
    "goes-left-and-back",
    "passes-in-front",
    "passes-behind",
)
_FORMAT_VERSION = 1  # bump when the rendering changes, so old copies are regenerated
MARGIN = 4  # background texture beyond the frame on each side, for the pan and the shake
BLOB = np.outer(np.hanning(6)[1:-1], np.hanning(6)[1:-1]) * 1.6  # a distractor's (4, 4) intensity


@dataclass(frozen=True)
class Sprite:
    """A sprite's (n, n) intensity (alpha), its RGB colour and its centre per frame, (T,) each, in pixels."""

    image: np.ndarray
    colour: np.ndarray
    x: np.ndarray
    y: np.ndarray
    side: float


@dataclass(frozen=True)
class Scene:
    """One clip: the background texture, the camera's top-left corner in it per frame ((T, 2) integers: pan and
    shake), and the sprites, drawn in order (the last in front)."""

    background: np.ndarray
    camera: np.ndarray
    sprites: tuple[Sprite, ...]

    def reversed(self) -> Scene:
        """The scene played backwards."""
        sprites = tuple(replace(s, x=s.x[::-1], y=s.y[::-1]) for s in self.sprites)
        return Scene(self.background, self.camera[::-1], sprites)

    def render(self) -> np.ndarray:
        """uint8 (T, H, W, 3) frames."""
        size = self.background.shape[0] - 2 * MARGIN
        frames = np.stack([self.background[y : y + size, x : x + size] for x, y in self.camera])
        for s in self.sprites:
            x, y = s.x - self.camera[:, 0] + MARGIN, s.y - self.camera[:, 1] + MARGIN  # the camera's view of it
            alpha = sprite_alpha(s.image, x, y, np.full_like(x, s.side), size)
            frames = frames * (1 - alpha) + s.colour * alpha
        return np.round(frames * 255).astype(np.uint8)


def ramp(num_frames: int, start: float, stop: float) -> np.ndarray:
    """(T,) progress from 0 to 1, linear between the clip's fractions ``start`` and ``stop``."""
    return np.clip((np.linspace(0.0, 1.0, num_frames) - start) / (stop - start), 0.0, 1.0)


def sample_scene(
    verb: int, digits: tuple[np.ndarray, np.ndarray], num_frames: int, size: int, rng: np.random.Generator
) -> tuple[Scene, int]:
    """The scene of class ``verb`` with the two (8, 8) ``digits``, and which of them the verb is about (0 or 1).

    The random draws are the same for every class (so paired classes share everything but what makes them
    differ): the scene is built for the first class of the verb's pair, then turned into the second.
    """
    t = num_frames
    background = _background(size + 2 * MARGIN, rng)
    pan = rng.uniform(-1.0, 1.0, size=2) * MARGIN * np.linspace(-1.0, 1.0, t)[:, None]  # (T, 2)
    shake = rng.integers(-1, 2, size=(t, 2))
    camera = np.clip(np.round(MARGIN + pan + shake), 0, 2 * MARGIN).astype(int)
    clutter = []
    for _ in range(2):  # small blobs drifting across, behind the digits
        start, velocity = rng.uniform(0, size, size=2), rng.uniform(-2.0, 2.0, size=2)
        path = start + velocity * np.arange(t)[:, None]
        clutter.append(Sprite(BLOB, _colour(rng) * rng.uniform(0.5, 0.9), path[:, 0], path[:, 1], rng.uniform(4, 6)))
    colours = (_colour(rng), _colour(rng))
    side = rng.uniform(0.3, 0.36, size=2) * size  # ~10-11 px at 32
    u = rng.uniform(0.0, 1.0, size=6)  # the class's positions, as fractions of their free ranges
    sign = np.where(rng.uniform(size=2) < 0.5, -1.0, 1.0)
    still = np.ones(t)

    pair = verb // 2
    if pair == 0:  # both move up or down, the left one over the first half, the right one over the second
        x = (size * (0.22 + 0.08 * u[0]), size * (0.7 + 0.08 * u[1]))
        travel = size * (0.25 + 0.1 * u[2:4]) * sign
        y = [size / 2 - travel[i] / 2 + (u[4 + i] - 0.5) * size * 0.1 for i in range(2)]
        moves = (ramp(t, 0.05, 0.45), ramp(t, 0.55, 0.95))
        paths = [(x[i] * still, y[i] + travel[i] * moves[i]) for i in range(2)]
    elif pair == 1:  # the first digit goes right and comes back; the second stays still, above or below it
        lo = size * (0.2 + 0.1 * u[0])
        far = lo + size * (0.35 + 0.1 * u[1])
        band = (size * (0.3 + 0.05 * u[2]), size * (0.7 - 0.05 * u[3]))[:: int(sign[0])]
        there_and_back = 1 - np.abs(1 - 2 * np.linspace(0.0, 1.0, t))
        other_x = size * (0.25 + 0.5 * u[4])
        paths = [(lo + (far - lo) * there_and_back, band[0] * still), (other_x * still, band[1] * still)]
    else:  # the first digit crosses the second, which stays still near the centre
        cx, cy = size * (0.4 + 0.2 * u[0]), size * (0.4 + 0.2 * u[1])
        reach = size * (0.4 + 0.1 * u[2]) * sign[0]
        paths = [
            (cx - reach + 2 * reach * ramp(t, 0.1, 0.9), (cy + (u[3] - 0.5) * 4) * still),
            (cx * still, cy * still),
        ]
    first, second = (Sprite(digits[i], colours[i], *paths[i], side[i]) for i in range(2))
    if verb == 1:  # the scene played backwards: now the right digit moves first
        return Scene(background, camera, (*clutter, first, second)).reversed(), 1
    if verb == 3:  # the same trajectory started half-way: from the far point back, and out again
        first = replace(first, x=np.roll(first.x, -(t // 2)), y=np.roll(first.y, -(t // 2)))
    sprites = (second, first) if verb == 4 else (first, second)  # passes-in-front: the first digit drawn last
    return Scene(background, camera, (*clutter, *sprites)), 0


def _clips(
    num_train: int, num_val: int, num_frames: int, size: int, rng: np.random.Generator
) -> Iterator[tuple[str, np.ndarray, int, int]]:
    images, targets, pools = digit_pools()
    for split, verb in balanced_verbs(num_train, num_val, len(VERBS), rng):
        ids = rng.choice(pools[split], size=2)
        scene, about = sample_scene(verb, (images[ids[0]], images[ids[1]]), num_frames, size, rng)
        yield split, scene.render(), verb, int(targets[ids[about]])


def generate_moving_digits_hard(
    root: str | Path,
    *,
    num_train: int = 1200,
    num_val: int = 600,
    num_frames: int = 16,
    size: int = 32,
    fps: int = 30,
    seed: int = 0,
) -> None:
    """Write the dataset under ``root`` (EPIC-KITCHENS-100 layout); skipped when its marker records the same
    parameters. ``num_train`` clips for training (balanced over the six classes: 240 gives the small-training-set
    setting of 40 a class), ``num_val`` for validation and testing, from disjoint halves of the digit images."""
    params = dict(num_train=num_train, num_val=num_val, num_frames=num_frames, size=size, fps=fps, seed=seed)
    params.update(dataset="moving_digits_hard", version=_FORMAT_VERSION)
    if not up_to_date(root, params):
        clips = _clips(num_train, num_val, num_frames, size, np.random.default_rng(seed))
        write_dataset(root, params, clips, (VERBS, "event"), (NOUNS, "digit"))
