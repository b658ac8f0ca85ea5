"""A training loader whose order and random draws depend only on (seed, epoch, clip).

Two things follow. A run resumed from a mid-epoch checkpoint sees exactly the clips, offsets, crops and flips
that the uninterrupted run would have seen. And one device with batch B sees the same global batches as N
devices with batch B/N: the shuffled order is split round-robin across ranks, as ``DistributedSampler`` does,
and each clip's draws do not depend on the DataLoader worker or rank that loads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["ResumableLoader", "clip_seed"]


def clip_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of every random draw made while loading clip ``index`` in ``epoch``."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


class SeededClips(Dataset):
    """Item ``(epoch, index)`` is ``dataset[index]``, loaded with torch's RNG seeded by :func:`clip_seed`."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # the wrapped dataset's attributes (records, ...)
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left as it was
            torch.manual_seed(clip_seed(self.seed, epoch, index))
            return self.dataset[index]


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by seed + epoch) that yields ``(epoch, index)`` and can skip the
    first ``start`` samples of its next epoch, for a mid-epoch resume."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def __iter__(self):
        start, self.start = self.start, 0
        epoch = self.epoch
        return ((epoch, index) for index in list(super().__iter__())[start:])


class ResumableLoader(DataLoader):
    """The training loader, rebuilt from ``loader`` (its dataset and settings; its sampler is replaced).

    Each pass starts at the first batch of the epoch that ``trainer``'s loop progress has not trained on
    yet: 0 normally, the restored position after a mid-epoch resume. The pass is only set up at its first
    ``next()``, because Lightning creates the iterator before it restores a checkpoint's loop progress (and
    before it sets the sampler's epoch), and worker processes would otherwise take indices at once. The seed
    is the one given to ``seed_everything`` (``PL_GLOBAL_SEED``). A private generator keeps worker seeding
    off the global RNG.
    """

    def __init__(self, loader: DataLoader, trainer: Any = None) -> None:
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        workers = loader.num_workers
        super().__init__(
            SeededClips(loader.dataset, seed),
            batch_size=loader.batch_size,
            sampler=EpochSampler(loader.dataset, replicas, rank, seed),
            drop_last=loader.drop_last,
            num_workers=workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context if workers else None,
            prefetch_factor=loader.prefetch_factor if workers else None,
            persistent_workers=loader.persistent_workers,
            generator=torch.Generator(),
        )
        self.trainer = trainer

    def trained_batches(self) -> int:
        """Batches of the current epoch already trained on, from the trainer's (restored) loop progress."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def __iter__(self) -> Iterator[Any]:
        return _Deferred(self._start)

    def _start(self) -> Iterator[Any]:
        self.sampler.start = self.trained_batches() * self.batch_size
        return super().__iter__()

    # Lightning checkpoints a loader that has these (and warns about one that does not), but it restores
    # the state only before creating an iterator, which training's set-up has already done: the position
    # is read from the loop progress instead (see above).
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.trained_batches()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        pass


class _Deferred:
    """An iterator that calls ``start()`` for the real one at its first ``next()``."""

    def __init__(self, start: Callable[[], Iterator[Any]]) -> None:
        self.start, self.iterator = start, None

    def __iter__(self) -> _Deferred:
        return self

    def __next__(self) -> Any:
        if self.iterator is None:
            self.iterator = self.start()
        return next(self.iterator)
