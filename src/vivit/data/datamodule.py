"""Clips from annotated video segments, batched for the ViViT models."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from vivit.data.decoding import VideoDecodeError, count_frames, decode_frames, frame_rate, get_decoder
from vivit.data.resumable import ResumableLoader
from vivit.data.sampling import clip_indices
from vivit.data.transforms import Photometric, PhotometricParams, clip_transform, finish_clips

log = logging.getLogger(__name__)

MAX_TRIES = 10  # training: decode attempts (the first video, then random others) before giving up


@dataclass(frozen=True)
class VideoRecord:
    """One labelled segment: frames ``start`` (0-based) to ``stop`` (exclusive) of the video at ``path``,
    a video file or a folder of its frames as JPEG files (:mod:`vivit.data.decoding`).

    ``stop=None`` means the end of the file: whole-clip datasets (Kinetics, SSv2, Moments in Time) do not
    list frame counts, so the frames are counted when the clip is decoded. ``fps``, the video's native
    frame rate, is needed only with ``data.target_fps``; None: read from the video file when needed.
    """

    path: Path
    start: int
    stop: int | None
    labels: dict[str, int]  # label set -> class id, e.g. {"verb": 3, "noun": 7}
    name: str  # e.g. the EPIC narration_id, for messages
    fps: float | None = None


@dataclass(frozen=True)
class DroppedRow:
    """An annotation row that a reader left out: its label is not a class, or its video is missing."""

    source: Path  # the annotation file (or folder) of the row
    name: str  # the row's name, as in VideoRecord
    file: Path  # the missing video; the annotation file for an unknown label
    problem: str


_dropped_rows: ContextVar[list[DroppedRow] | None] = ContextVar("dropped_rows", default=None)


@contextmanager
def collect_dropped_rows() -> Iterator[list[DroppedRow]]:
    """Collects the rows that :func:`usable_records` leaves out within the block into the list it yields
    (they are still logged), for a report of every problem (``vivit.data.check``)."""
    rows: list[DroppedRow] = []
    token = _dropped_rows.set(rows)
    try:
        yield rows
    finally:
        _dropped_rows.reset(token)


def usable_records(
    records: Sequence[VideoRecord], unknown: Sequence[tuple[str, str]], source: Path, root: Path
) -> list[VideoRecord]:
    """The records of annotation file ``source`` whose video exists: every reader ends with this check.

    ``unknown`` holds ``(row name, label)`` for the rows whose label is not a class of the dataset. Those
    and the rows whose video is missing are logged, with a count and the first names, and left out; the
    split goes on without them. Raises, naming ``source`` and ``root``, when no row is left. Within
    :func:`collect_dropped_rows`, the rows left out are also collected.
    """
    exists: dict[Path, bool] = {}
    kept, missing = [], []
    for record in records:
        if record.path not in exists:
            exists[record.path] = record.path.exists()  # a video file or a folder of frames
        (kept if exists[record.path] else missing).append(record)
    total = len(records) + len(unknown)
    if (dropped := _dropped_rows.get()) is not None:
        dropped += [DroppedRow(source, name, source, f"label {label!r} is not a class") for name, label in unknown]
        dropped += [DroppedRow(source, r.name, r.path, "video is missing") for r in missing]
    if unknown:
        first = ", ".join(f"{name} ({label!r})" for name, label in unknown[:5])
        log.warning(
            "%s: skipped %d of %d rows whose label is not a class (first: %s)", source, len(unknown), total, first
        )
    if missing:
        first = ", ".join(record.name for record in missing[:5])
        log.warning(
            "%s: skipped %d of %d rows whose video is missing under %s (first: %s; e.g. no %s)",
            source,
            len(missing),
            total,
            root,
            first,
            missing[0].path,
        )
    if not kept:
        example = f" (e.g. no {missing[0].path})" if missing else ""
        raise ValueError(f"{source}: none of its {total} rows has a known label and a video under {root}{example}")
    return kept


class Batch(TypedDict, total=False):
    """What the loaders yield (pytorchvideo-style dict)."""

    video: Tensor  # (B, C, T, H, W) float32, normalised; uint8 before the transfer with data.photometric_on=device
    photometric: list[PhotometricParams | None]  # with data.photometric_on=device, until the transfer: the draws
    label: Tensor  # (B,) int64 with one head; (B, len(heads)) int64, columns in heads order, otherwise
    index: Tensor  # (B,) int64 position of the record in its split (after any training replacement)
    view: Tensor  # (B,) int64 test view of the record: clip view // crops, crop view % crops; 0 otherwise
    bad_videos: Tensor  # () int64 videos that failed to decode: replaced (training) or left out (evaluation)
    bad_files: list[str]  # their paths


def collate_clips(items: list[dict]) -> Batch:
    """``default_collate`` of the clips, plus the videos that failed to decode on the way (each item's
    ``bad`` paths) as ``bad_videos`` and ``bad_files``, and the clips' photometric draws as a list (on the
    device path). An item with no clip (an evaluation video that failed, with ``data.skip_bad_eval_videos``)
    is left out; a batch of only such items has just an empty ``label``."""
    bad = [path for item in items for path in item.pop("bad")]
    clips = [item for item in items if "video" in item]
    photometric = [item.pop("photometric") for item in clips if "photometric" in item]
    batch = default_collate(clips) if clips else {"label": torch.empty(0, dtype=torch.int64)}
    if photometric:
        batch["photometric"] = photometric
    return {**batch, "bad_videos": torch.tensor(len(bad)), "bad_files": bad}


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
    ``photometric`` the draws that :func:`~vivit.data.transforms.finish_clips` applies after the transfer.
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


class VideoDataModule(LightningDataModule):
    """Train/val/test loaders of fixed-length clips for any dataset with an ``annotations`` reader.

    ``annotations(root, split)`` returns the records of "train", "val" or "test". ``heads`` maps label-set
    name to class count, e.g. ``{"verb": 6}`` or ``{"verb": 97, "noun": 300}``; ``num_classes`` (the total
    number of logits, read by the model config) must equal their sum. ``classes(root)``, when given,
    returns the class names per head; ``setup`` then checks that their counts match ``heads``, since
    a wrong count would shift or overflow the class indices. ``generate(root)``, when given,
    creates the dataset in ``prepare_data`` (the built-in one skips this when it is already there).
    Batches are :class:`Batch` dicts. ``decoder`` names the backend for video files (``pyav``, or
    ``torchcodec`` when installed); ``target_fps`` (None: native frames, as ViViT) makes ``stride`` count
    frames resampled to that rate.

    ``photometric_on`` says where colour jitter, RandAugment and normalisation run: ``loader`` (in the
    DataLoader workers, in parallel: the default on CPU), ``device`` (batched on the accelerator after the
    transfer, in :meth:`on_after_batch_transfer`: a quarter of the bytes to copy, uint8, and no worker time) or
    ``auto``: ``device`` when the trainer runs on an accelerator, ``loader`` otherwise. The random draws are made
    in the workers either way, so both give the same batches.

    Validation takes one view of each video: the centre clip, centre crop. Testing takes
    ``test_clips`` evenly spaced clips x ``test_crops`` spatial crops (1: centre; 3: left/centre/right,
    or top/middle/bottom for portrait video), as separate items; under DDP each video goes whole to one
    process (:class:`WholeVideoSampler`), so that the model can average its views exactly once.
    """

    def __init__(
        self,
        root: str,
        annotations: Callable[[Path, str], list[VideoRecord]],
        heads: dict[str, int],
        num_frames: int,
        stride: int = 1,
        crop_size: int = 224,
        min_resize: int | None = None,
        scale_jitter: Sequence[float] | None = None,
        hflip_prob: float = 0.5,
        colour_jitter_prob: float = 0.0,
        randaugment_layers: int = 0,
        randaugment_magnitude: int | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        batch_size: int = 8,
        num_workers: int = 0,
        generate: Callable[[Path], None] | None = None,
        num_classes: int | None = None,
        classes: Callable[[Path], dict[str, list[str]]] | None = None,
        test_clips: int = 1,
        test_crops: int = 1,
        max_bad_videos: float = 0.01,
        skip_bad_eval_videos: bool = False,
        decoder: str = "pyav",
        target_fps: float | None = None,
        photometric_on: str = "auto",
    ) -> None:
        super().__init__()
        if photometric_on not in ("auto", "loader", "device"):
            raise ValueError(f"data.photometric_on must be auto, loader or device, got {photometric_on!r}")
        self.photometric_on = photometric_on
        self.root = Path(root)
        self.heads = {str(k): int(v) for k, v in dict(heads).items()}  # also turns a Hydra DictConfig into a dict
        if not self.root.exists() and generate is None:
            raise ValueError(
                f"data.root={root} does not exist: set data.root to the dataset directory "
                "(or give data.generate to create it)"
            )
        if not self.heads or min(self.heads.values()) < 1:
            raise ValueError(f"data.heads must map each label set to a class count >= 1, got {self.heads}")
        if num_classes is not None and num_classes != sum(self.heads.values()):
            raise ValueError(f"data.num_classes={num_classes} must equal the sum of data.heads={self.heads}")
        for key, value in (
            ("num_frames", num_frames),
            ("stride", stride),
            ("crop_size", crop_size),
            ("batch_size", batch_size),
            ("test_clips", test_clips),
            ("test_crops", test_crops),
        ):
            if value < 1:
                raise ValueError(f"data.{key} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        for key, value in (
            ("hflip_prob", hflip_prob),
            ("colour_jitter_prob", colour_jitter_prob),
            ("max_bad_videos", max_bad_videos),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"data.{key} must be in [0, 1], got {value}")
        if scale_jitter is not None and not (len(scale_jitter) == 2 and 0 < scale_jitter[0] <= scale_jitter[1]):
            raise ValueError(f"data.scale_jitter must be null or [min, max] with 0 < min <= max, got {scale_jitter}")
        if target_fps is not None and not target_fps > 0:
            raise ValueError(f"data.target_fps must be null (native frames) or > 0, got {target_fps}")
        get_decoder(decoder)  # fails now, saying how to fix it, rather than in a loader worker
        self.decoder, self.target_fps = decoder, target_fps
        if randaugment_layers < 0 or (randaugment_magnitude or 0) < 0:
            raise ValueError(
                f"data.randaugment_layers ({randaugment_layers}) and data.randaugment_magnitude "
                f"({randaugment_magnitude}) must be >= 0"
            )
        self.annotations, self.generate, self.classes = annotations, generate, classes
        self.num_classes = sum(self.heads.values())
        self.num_frames, self.stride = num_frames, stride
        self.crop_size, self.min_resize, self.hflip_prob = crop_size, min_resize, hflip_prob
        self.augmentation = dict(
            scale_jitter=None if scale_jitter is None else tuple(float(s) for s in scale_jitter),
            colour_jitter_prob=colour_jitter_prob,
            randaugment_layers=randaugment_layers,
            randaugment_magnitude=randaugment_magnitude,
        )  # training only
        self.photometric = Photometric(colour_jitter_prob, randaugment_layers, randaugment_magnitude)
        self.max_bad_videos, self.skip_bad_eval_videos = max_bad_videos, skip_bad_eval_videos
        self.bad_files: dict[str, set[str]] = {}  # split -> videos that failed to decode so far in the run
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.test_clips, self.test_crops = test_clips, test_crops
        self.datasets: dict[str, VideoClipDataset] = {}
        self._videos: dict[str, list[str]] = {}  # split -> its distinct video files, see videos()

    @property
    def class_names(self) -> dict[str, list[str]]:
        """Class names per head, indexed by class id, for printing predictions."""
        if self.classes is None:
            raise ValueError("data.classes is not set: this dataset has no class-name reader")
        names = self.classes(self.root)
        if missing := [head for head in self.heads if head not in names]:
            raise ValueError(f"data.heads {missing} have no class names in {self.root} (it has {sorted(names)})")
        return {head: names[head] for head in self.heads}

    def prepare_data(self) -> None:
        if self.generate is not None:
            self.generate(self.root)

    def check_class_counts(self) -> None:
        """Raises when the dataset's class counts (``classes(root)``) differ from ``heads``."""
        if self.classes is None:
            return
        for head, names in self.class_names.items():
            if len(names) != self.heads[head]:
                raise ValueError(
                    f"data.heads.{head}={self.heads[head]}, but the dataset under {self.root} has "
                    f"{len(names)} {head} classes: set data.heads and data.num_classes to match"
                )

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.check_class_counts()
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits[stage] if stage else ("train", "val", "test"):
            if split in self.datasets:
                continue
            train = split == "train"
            clips, crops = (self.test_clips, self.test_crops) if split == "test" else (1, 1)
            transform = [
                clip_transform(
                    train,
                    crop_size=self.crop_size,
                    min_resize=self.min_resize,
                    hflip_prob=self.hflip_prob,
                    mean=self.mean,
                    std=self.std,
                    crop=(crop, crops),
                    **(self.augmentation if train else {}),
                )
                for crop in range(crops)
            ]
            records = self.annotations(self.root, split)
            log.info("%s: %d clips in %s", self.root, len(records), split)
            self.datasets[split] = VideoClipDataset(
                records,
                self.num_frames,
                self.stride,
                transform,
                train,
                self.heads,
                clips=clips,
                skip_bad=self.skip_bad_eval_videos,
                decoder=self.decoder,
                target_fps=self.target_fps,
                photometric_on_device=self.photometric_on_device,
            )

    @property
    def photometric_on_device(self) -> bool:
        """Whether the photometric ops and normalisation run after the transfer (``photometric_on``)."""
        if self.photometric_on == "auto":
            return self.trainer is not None and self.trainer.strategy.root_device.type != "cpu"
        return self.photometric_on == "device"

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"no {split!r} dataset: call setup() for the matching stage first")
        train = split == "train"
        sampler = None
        if split == "test" and self.trainer is not None and self.trainer.world_size > 1:
            sampler = WholeVideoSampler(self.datasets[split], self.trainer.world_size, self.trainer.global_rank)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_clips,
        )

    def on_before_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Keeps count of the videos that failed to decode (the workers only log them) and stops training,
        naming them, once more than ``max_bad_videos`` of the training videos have failed."""
        if batch["bad_files"]:
            trainer = self.trainer
            split = "train" if trainer.training else "test" if trainer.testing or trainer.predicting else "val"
            self.report_bad_videos(split, batch["bad_files"])
        return batch

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """On the device path, the photometric ops and normalisation of the batch's uint8 clips, where they now are."""
        if batch.get("video") is not None and batch["video"].dtype == torch.uint8:
            params = batch.pop("photometric", None) or [None] * len(batch["video"])
            batch["video"] = finish_clips(batch["video"], params, self.photometric, self.mean, self.std)
        return batch

    def bad_video_marks(self, split: str) -> Tensor:
        """(N,) float: 1 for each of the split's N distinct videos (sorted by path) that has failed to decode
        in this process so far in the run, else 0. The classifier takes the maximum over processes."""
        bad = self.bad_files.get(split, set())
        return torch.tensor([float(video in bad) for video in self.videos(split)])

    def videos(self, split: str) -> list[str]:
        """The distinct video files of ``split``, sorted (set up first; listed once)."""
        if split not in self._videos:
            self._videos[split] = sorted({str(record.path) for record in self.datasets[split].records})
        return self._videos[split]

    def state_dict(self) -> dict[str, dict[str, list[str]]]:
        """The bad videos so far, so that a resumed run goes on counting (and limiting) them."""
        return {"bad_files": {split: sorted(files) for split, files in self.bad_files.items()}}

    def load_state_dict(self, state: dict[str, dict[str, list[str]]]) -> None:
        self.bad_files = {split: set(files) for split, files in state.get("bad_files", {}).items()}

    def report_bad_videos(self, split: str, files: Sequence[str]) -> None:
        """Adds ``files`` (videos of ``split`` that failed to decode) to the count, logs it, and raises when
        more than the fraction ``max_bad_videos`` of the distinct training videos have failed."""
        bad = self.bad_files.setdefault(split, set())
        new = sorted(set(files) - bad)
        if not new:
            return
        bad.update(new)
        videos = len(self.videos(split))
        if split == "train":
            log.warning("train: %d of %d videos failed to decode so far (new: %s)", len(bad), videos, ", ".join(new))
            if len(bad) > self.max_bad_videos * videos:
                names = sorted(bad)
                more = f" and {len(names) - 20} more" if len(names) > 20 else ""
                raise RuntimeError(
                    f"{len(bad)} of the {videos} training videos failed to decode, more than "
                    f"data.max_bad_videos={self.max_bad_videos}: {', '.join(names[:20])}{more}"
                )
        else:
            log.warning(
                "%s: %d of %d videos failed to decode and are left out, %d evaluated (new: %s)",
                split,
                len(bad),
                videos,
                videos - len(bad),
                ", ".join(new),
            )

    def train_dataloader(self) -> DataLoader:
        # Its order and random draws follow (seed, epoch, clip): exact mid-epoch resume, any device count.
        return ResumableLoader(self._loader("train"), self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
