"""Clips of annotated segments, as dataset items and batches: decoding, sampling, transforms, bad videos."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, default_collate

from vivit.data.decoding import VideoDecodeError, count_frames, decode_frames, frame_rate
from vivit.data.photometric import PhotometricParams
from vivit.data.records import VideoRecord
from vivit.data.sampling import clip_indices

log = logging.getLogger(__name__)

MAX_TRIES = 10  # training: decode attempts (the first video, then random others) before giving up


class Batch(TypedDict, total=False):
    """What the loaders yield (pytorchvideo-style dict)."""

    video: Tensor  # (B, C, T, H, W) float32, normalised; uint8 before the transfer with data.photometric_on=device
    photometric: list[PhotometricParams | None]  # with data.photometric_on=device, until the transfer: the draws
    label: Tensor  # (B,) int64 with one head; (B, len(heads)) int64, columns in heads order, otherwise
    index: Tensor  # (B,) int64 position of the record in its split (after any training replacement)
    view: Tensor  # (B,) int64 test view of the record: clip view // crops, crop view % crops; 0 otherwise
    bad_files: list[str]  # videos that failed to decode: replaced (training) or left out (evaluation)


def collate_clips(items: list[dict]) -> Batch:
    """``default_collate`` of the clips, plus the videos that failed to decode on the way (each item's
    ``bad`` paths) as ``bad_files``, and the clips' photometric draws as a list (on the
    device path). An item with no clip (an evaluation video that failed, with ``data.skip_bad_eval_videos``)
    is left out; a batch of only such items has just an empty ``label``."""
    bad = [path for item in items for path in item.pop("bad")]
    clips = [item for item in items if "video" in item]
    photometric = [item.pop("photometric") for item in clips if "photometric" in item]
    batch = default_collate(clips) if clips else {"label": torch.empty(0, dtype=torch.int64)}
    if photometric:
        batch["photometric"] = photometric
    return {**batch, "bad_files": bad}


class VideoClipDataset(Dataset):
    """Map-style dataset: item ``i`` is view ``i % views`` of record ``i // views``.

    Training draws a random clip offset per call and replaces an undecodable video with a random other
    one (bounded, logged). Evaluation raises on a bad video: swapping would silently change what is
    being evaluated. With ``skip_bad``, it returns no clip instead, which :func:`collate_clips` leaves out.
    Each item lists the videos that failed for it under ``bad``. Evaluation takes ``clips`` evenly spaced
    clips (1: the centre clip), each through every transform when ``transform`` is a sequence (one per
    spatial crop): ``views = clips * crops``. Frames are read with the video backend ``decoder``; with
    ``target_fps``, ``stride`` counts frames at that rate (:func:`clip_indices`). A clip is decoded once for
    all its crops. With ``photometric_on_device``, an item's ``video`` is the uint8 clip and its
    ``photometric`` the draws that :func:`~vivit.data.photometric.finish_clips` applies after the transfer.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        num_frames: int,
        stride: int,
        transform: Callable[[Tensor], Tensor] | Sequence[Callable[[Tensor], Tensor]],
        train: bool,
        heads: Sequence[str],
        clips: int = 1,
        skip_bad: bool = False,
        decoder: str = "pyav",
        target_fps: float | None = None,
        photometric_on_device: bool = False,
    ) -> None:
        self.records = list(records)
        self.photometric_on_device = photometric_on_device
        self._decoded: tuple[tuple[int, int], np.ndarray] | None = None  # the last clip, for its other crops
        self.decoder, self.target_fps = decoder, target_fps
        self.num_frames, self.stride = num_frames, stride
        self.crops = list(transform) if isinstance(transform, Sequence) else [transform]
        self.train, self.heads, self.skip_bad = train, list(heads), skip_bad
        self.clips, self.views = clips, clips * len(self.crops)
        if train and self.views != 1:
            raise ValueError(f"training takes one view per video, got {clips} clips x {len(self.crops)} crops")

    def __len__(self) -> int:
        return len(self.records) * self.views

    def __getitem__(self, item: int) -> dict[str, Tensor]:
        index, view = divmod(item, self.views)
        failed = []
        for _ in range(MAX_TRIES if self.train else 1):
            try:
                return {**self._load(index, view), "bad": failed}
            except VideoDecodeError as error:
                if not self.train:
                    if not self.skip_bad:
                        raise
                    log.warning("%s; left out of the evaluation", error)
                    return {"bad": [str(error.path)]}
                log.warning("%s; using another random training video", error)
                failed.append(str(error.path))
                # torch's generator: seeded per DataLoader worker, so workers draw different replacements.
                index = int(torch.randint(len(self.records), ()).item())
        raise RuntimeError(f"{MAX_TRIES} training videos in a row failed to decode: {', '.join(failed)}")

    def _load(self, index: int, view: int = 0) -> dict[str, Tensor]:
        record = self.records[index]
        clip, crop = divmod(view, len(self.crops))
        offset = float(torch.rand(()).item()) if self.train else (clip, self.clips)
        stop = count_frames(record.path, self.decoder) if record.stop is None else record.stop
        rate = 1.0
        if self.target_fps:
            rate = (record.fps or frame_rate(record.path, self.decoder)) / self.target_fps
        indices = clip_indices(stop - record.start, self.num_frames, self.stride, offset=offset, rate=rate)
        if self._decoded is not None and self._decoded[0] == (index, clip):
            frames = self._decoded[1]
        else:
            frames = decode_frames(record.path, [record.start + i for i in indices], self.decoder)  # (T, H, W, 3)
            self._decoded = ((index, clip), frames) if len(self.crops) > 1 else None
        labels = [record.labels[head] for head in self.heads]
        transform = self.crops[crop]
        if self.photometric_on_device:
            video, photometric = transform.prepare(frames)  # (C, T, H, W) uint8, and the draws
            item = {"video": video, "photometric": photometric}
        else:
            item = {"video": transform(frames)}  # (C, T, H, W) float
        return {
            **item,
            "label": torch.tensor(labels[0] if len(labels) == 1 else labels, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
            "view": torch.tensor(view, dtype=torch.int64),
        }


class WholeVideoSampler(DistributedSampler):
    """Test items for one of several processes: videos ``rank``, ``rank + W``, ... with all their views.

    Lightning's default ``DistributedSampler`` pads the last round with repeated items so that every
    process gets as many, which would count some videos twice. Here every item is taken exactly once,
    and a process may get one video fewer. Lightning keeps a loader's sampler when it is already a
    ``DistributedSampler``.
    """

    def __init__(self, dataset: VideoClipDataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        videos = range(rank, len(dataset.records), num_replicas)
        self.items = [video * dataset.views + view for video in videos for view in range(dataset.views)]
        self.num_samples = len(self.items)

    def __iter__(self) -> Iterator[int]:
        return iter(self.items)
