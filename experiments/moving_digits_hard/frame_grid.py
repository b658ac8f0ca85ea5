"""The README's picture of data=moving_digits_hard: one clip of each class (rows), every other frame (columns),
from the generator's own scenes (seed 0), enlarged 3x.
    python experiments/moving_digits_hard/frame_grid.py    # writes experiments/moving_digits_hard/classes.png
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

from vivit.data.moving_digits import digit_pools  # noqa: E402
from vivit.data.moving_digits_hard import VERBS, sample_scene  # noqa: E402


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, _, pools = digit_pools()
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(len(VERBS), 8, figsize=(8, len(VERBS) * 1.1))
    for verb, row in enumerate(axes):
        ids = rng.choice(pools["train"], size=2)
        scene, _ = sample_scene(verb, (images[ids[0]], images[ids[1]]), 16, 32, np.random.default_rng(verb))
        for ax, frame in zip(row, scene.render()[::2], strict=True):
            ax.imshow(frame, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        row[0].set_ylabel(VERBS[verb], rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.2)
    fig.savefig(HERE / "classes.png", dpi=90)


if __name__ == "__main__":
    main()
