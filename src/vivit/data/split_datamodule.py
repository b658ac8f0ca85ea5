"""The data module of a dataset released with official train/test splits (UCF-101, HMDB-51): ``data.split``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vivit.data.datamodule import VideoDataModule
from vivit.data.official_splits import OFFICIAL_SPLITS, check_official_split
from vivit.data.records import VideoRecord


class OfficialSplitsDataModule(VideoDataModule):
    """A :class:`VideoDataModule` whose ``annotations`` reader reads the official split ``split`` (1, 2 or 3).

    The split is given to the reader here, not in its config node, so that ``data.split`` is the one place of it:
    a checkpoint keeps its run config resolved, and ``src/eval.py ckpt_path=... data.split=2`` then reads split 2.
    """

    def __init__(self, split: int, annotations: Callable[..., list[VideoRecord]], **kwargs: Any) -> None:
        reader: Callable[[Path, str], list[VideoRecord]] = functools.partial(
            annotations, official_split=check_official_split(split)
        )
        super().__init__(annotations=reader, **kwargs)
        self.split, self._reader = split, annotations

    def annotation_sets(self) -> dict[str, Callable[[Path, str], list[VideoRecord]]]:
        """The three official splits: a copy made by ``src/prepare_data.py`` holds the videos of all of them."""
        return {f"split {n}": functools.partial(self._reader, official_split=n) for n in OFFICIAL_SPLITS}
