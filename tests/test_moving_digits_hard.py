"""data=moving_digits_hard: generated deterministically, read through the same path as every dataset, and its
classes mean what they say: a frame-order-blind model cannot tell the order pairs apart."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY_NET, assert_same_encoding, compose_config
from vivit.data.moving_digits import digit_pools
from vivit.data.moving_digits_hard import VERBS, _clips, generate_moving_digits_hard, sample_scene

FRAMES, SIZE = 16, 32


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    images, _, _ = digit_pools()
    return images[3], images[10]


def scene(verb: int, digits, seed: int):
    return sample_scene(verb, digits, FRAMES, SIZE, np.random.default_rng(seed))


def decoded(root: Path) -> tuple[list[str], list[np.ndarray]]:
    import av

    tables = [p.read_text() for p in sorted((root / "annotations").glob("*.csv"))]
    videos = []
    for path in sorted(root.glob("P*/videos/*.MP4")):
        with av.open(str(path)) as container:
            videos.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
    return tables, videos


def test_generation_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    small = dict(num_train=12, num_val=6, num_frames=8)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate_moving_digits_hard(tmp_path / name, seed=seed, **small)
    (tables_a, videos_a), (tables_b, videos_b), (tables_c, videos_c) = (decoded(tmp_path / n) for n in "abc")
    assert len(videos_a) == 18 and all(v.shape == (8, SIZE, SIZE, 3) for v in videos_a)
    assert tables_a == tables_b
    for x, y in zip(videos_a, videos_b, strict=True):
        assert_same_encoding(x, y)
    assert tables_a != tables_c and np.abs(videos_a[0].astype(int) - videos_c[0]).mean() > 5
    rendered = [[frames for _, frames, _, _ in _clips(12, 6, 8, SIZE, np.random.default_rng(0))] for _ in range(2)]
    assert all(np.array_equal(x, y) for x, y in zip(*rendered, strict=True))  # exact before encoding
    rows = list(csv.DictReader(io.StringIO(tables_a[1])))  # EPIC_100_train.csv
    assert sorted(int(row["verb_class"]) for row in rows) == sorted(list(range(len(VERBS))) * 2)  # balanced


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reversed_frames_swap_the_order_classes(digits, seed: int) -> None:
    """right-moves-first is left-moves-first played backwards, frame for frame: whatever ignores the order of
    the frames (their mean, any set function) gives both the same answer."""
    first, about_first = scene(0, digits, seed)
    second, about_second = scene(1, digits, seed)
    forward, backward = first.render(), second.render()
    np.testing.assert_array_equal(backward, forward[::-1])
    assert not np.array_equal(backward, forward)
    np.testing.assert_array_equal(backward.mean(0), forward.mean(0))
    assert (about_first, about_second) == (0, 1)  # the noun follows the digit that moves first


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_reversal_classes_share_the_moving_digits_positions(digits, seed: int) -> None:
    """goes-left-and-back is goes-right-and-back started half-way: the moving digit visits the same positions,
    in another order; it starts at the near end in one and at the far end in the other."""
    right, left = scene(2, digits, seed)[0].sprites[-2], scene(3, digits, seed)[0].sprites[-2]
    np.testing.assert_allclose(np.sort(left.x), np.sort(right.x))
    assert right.x[0] < right.x[FRAMES // 2] and left.x[0] > left.x[FRAMES // 2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_in_front_and_behind_differ_only_where_the_digits_meet(digits, seed: int) -> None:
    front, behind = scene(4, digits, seed)[0].render(), scene(5, digits, seed)[0].render()
    same = [np.array_equal(a, b) for a, b in zip(front, behind, strict=True)]
    assert same[0] and same[-1] and not all(same)  # apart at the start and the end; one over the other between


def test_trains_and_tests_through_the_common_path(tmp_path: Path) -> None:
    """data=moving_digits_hard with two heads (events and digits): generated on first use, trained, tested."""
    from vivit.pipeline import train

    overrides = [
        "data=moving_digits_hard",
        f"data.root={tmp_path / 'data'}",
        "data.generate.num_train=24",
        "data.generate.num_val=12",
        "+data.heads.noun=10",
        "data.num_classes=16",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        *TINY_NET,
    ]
    metrics = train(compose_config("train", overrides, tmp_path / "run"))
    assert metrics["test/videos"] == 12 and 0.0 <= metrics["test/acc_top1"] <= 1.0
    classes = (tmp_path / "data" / "annotations" / "EPIC_100_verb_classes.csv").read_text()
    assert all(verb in classes for verb in VERBS)
