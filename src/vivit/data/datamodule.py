"""The LightningDataModule of every video dataset: train/val/test loaders of clips from a dataset's annotations."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from vivit.data.annotations import UnlabelledSplitError, layout_error
from vivit.data.clips import Batch, VideoClipDataset, WholeVideoSampler, collate_clips
from vivit.data.decoding import get_decoder
from vivit.data.photometric import Photometric, finish_clips
from vivit.data.records import VideoRecord
from vivit.data.resumable import ResumableLoader
from vivit.data.transforms import clip_transform

log = logging.getLogger(__name__)

AUTO = "auto"  # data.heads.<head>, data.num_classes, data.eval_split: read from the dataset's files
EVAL_SPLITS = (AUTO, "test", "val")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class VideoDataModule(LightningDataModule):
    """Train/val/test loaders of fixed-length clips for any dataset with an ``annotations`` reader.

    ``annotations(root, split)`` returns the records of "train", "val" or "test". ``heads`` maps label-set
    name to class count, e.g. ``{"verb": 6}`` or ``{"verb": 97, "noun": 300}``, or to ``"auto"``: the count
    of the dataset's class table, read now from ``classes(root)`` (SSv2's labels.json, EPIC's class CSVs,
    ...). ``num_classes`` (the total number of logits, read by the model config; ``"auto"`` or None: the sum)
    must equal their sum. ``classes(root)``, when given, returns the class names per head; a count given
    as a number is checked against it at setup, since a wrong count would shift or overflow the class
    indices. ``generate(root)``, when given, creates the dataset in ``prepare_data`` (the built-in one skips
    this when it is already there).

    ``eval_split`` is the split that testing reads: ``test``, ``val``, or ``auto``: the test split when the
    dataset has a labelled one, else (no test annotations, or no labels in them, as Kinetics' official test
    lists) the validation split, with a warning that says so. :meth:`read_annotations` reads every split a
    run will use, so that a missing file fails before training rather than after it.
    Batches are :class:`Batch` dicts. ``decoder`` names the backend for video files (``pyav``, or
    ``torchcodec`` when installed); ``target_fps`` (None: native frames, as ViViT) makes ``stride`` count
    frames resampled to that rate.

    ``photometric_on`` says where colour jitter, RandAugment and normalisation run: ``loader`` (in the
    DataLoader workers, in parallel: the default on CPU), ``device`` (batched on the accelerator after the
    transfer, in :meth:`on_after_batch_transfer`: a quarter of the bytes to copy, uint8, and no worker time) or
    ``auto``: ``device`` when the trainer runs on an accelerator, ``loader`` otherwise. The random draws are made
    in the workers either way, so both give the same batches.

    A video that fails to decode is replaced by another in training (and, with ``skip_bad_eval_videos``, left out
    in evaluation) and named in its batch; the model's :class:`~vivit.training.bad_videos.BadVideos` callback keeps
    the account, and stops training once more than ``max_bad_videos`` of the training videos have failed.

    Validation takes one view of each video: the centre clip, centre crop. Testing takes
    ``test_clips`` evenly spaced clips x ``test_crops`` spatial crops (1: centre; 3: left/centre/right,
    or top/middle/bottom for portrait video), as separate items; under DDP each video goes whole to one
    process (:class:`WholeVideoSampler`), so that the model can average its views exactly once.
    """

    def __init__(
        self,
        root: str,
        annotations: Callable[[Path, str], list[VideoRecord]],
        heads: dict[str, int | str],
        num_frames: int,
        stride: int = 1,
        crop_size: int = 224,
        min_resize: int | None = None,
        scale_jitter: Sequence[float] | None = None,
        hflip_prob: float = 0.5,
        colour_jitter_prob: float = 0.0,
        colour_drop_prob: float = 0.0,
        randaugment_layers: int = 0,
        randaugment_magnitude: int | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        batch_size: int = 8,
        num_workers: int = 0,
        generate: Callable[[Path], None] | None = None,
        num_classes: int | str | None = None,
        classes: Callable[[Path], dict[str, list[str]]] | None = None,
        test_clips: int = 1,
        test_crops: int = 1,
        max_bad_videos: float = 0.01,
        skip_bad_eval_videos: bool = False,
        decoder: str = "pyav",
        target_fps: float | None = None,
        photometric_on: str = "auto",
        eval_split: str = AUTO,
    ) -> None:
        super().__init__()
        if photometric_on not in ("auto", "loader", "device"):
            raise ValueError(f"data.photometric_on must be auto, loader or device, got {photometric_on!r}")
        self.photometric_on = photometric_on
        self.root = Path(root)
        self.annotations, self.generate, self.classes = annotations, generate, classes
        if eval_split not in EVAL_SPLITS:
            raise ValueError(f"data.eval_split must be one of {list(EVAL_SPLITS)}, got {eval_split!r}")
        self.eval_split = eval_split
        self.heads = {str(k): v for k, v in dict(heads).items()}  # also turns a Hydra DictConfig into a dict
        self._class_names: dict[str, list[str]] | None = None
        if bad := {k: v for k, v in self.heads.items() if v != AUTO and not (isinstance(v, int) and v >= 1)}:
            raise ValueError(f"data.heads must map each label set to a class count >= 1 or {AUTO}, got {bad}")
        if not self.heads:
            raise ValueError("data.heads must name at least one label set, e.g. {label: auto}")
        auto = [head for head, count in self.heads.items() if count == AUTO]
        if auto and classes is None:
            raise ValueError(f"data.heads.{auto[0]}={AUTO} needs data.classes, a reader of the class table")
        if not auto:
            self._check_num_classes(num_classes)
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
            ("colour_drop_prob", colour_drop_prob),
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
        # The dataset itself, last: a root that is not this dataset fails here, saying what it should hold.
        if generate is None and not self.root.is_dir():
            what = "is a file, not a directory" if self.root.exists() else "does not exist"
            raise self.layout_error(f"data.root={root} {what}")
        if classes is not None and (auto or generate is None):
            names = self.class_names
            self.heads.update({head: len(names[head]) for head in auto})
            self._check_num_classes(num_classes)
        self.num_classes = sum(self.heads.values())
        self.num_frames, self.stride = num_frames, stride
        self.crop_size, self.min_resize, self.hflip_prob = crop_size, min_resize, hflip_prob
        self.augmentation = dict(
            scale_jitter=None if scale_jitter is None else tuple(float(s) for s in scale_jitter),
            colour_jitter_prob=colour_jitter_prob,
            colour_drop_prob=colour_drop_prob,
            randaugment_layers=randaugment_layers,
            randaugment_magnitude=randaugment_magnitude,
        )  # training only
        self.photometric = Photometric(colour_jitter_prob, colour_drop_prob, randaugment_layers, randaugment_magnitude)
        self.max_bad_videos, self.skip_bad_eval_videos = max_bad_videos, skip_bad_eval_videos
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.test_clips, self.test_crops = test_clips, test_crops
        self.datasets: dict[str, VideoClipDataset] = {}
        self._records: dict[str, list[VideoRecord]] = {}  # split -> its records, see records()
        self._videos: dict[str, list[str]] = {}  # split -> its distinct video files, see videos()

    def _check_num_classes(self, num_classes: int | str | None) -> None:
        if num_classes not in (None, AUTO) and num_classes != sum(self.heads.values()):
            raise ValueError(f"data.num_classes={num_classes} must equal the sum of data.heads={self.heads}")

    @property
    def class_names(self) -> dict[str, list[str]]:
        """Class names per head, indexed by class id, for printing predictions (read once)."""
        if self.classes is None:
            raise ValueError("data.classes is not set: this dataset has no class-name reader")
        if self._class_names is None:
            self._class_names = self._read(self.classes, self.root)
        names = self._class_names
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

    def layout_error(self, problem: str) -> FileNotFoundError:
        """:func:`vivit.data.annotations.layout_error` for this dataset's reader and root."""
        return layout_error(problem, self.annotations, self.root)

    def _read(self, reader: Callable, *args):
        """``reader(*args)``: a missing annotation file becomes :meth:`layout_error`."""
        try:
            return reader(*args)
        except FileNotFoundError as error:
            empty = self.root.is_dir() and not any(self.root.iterdir())
            raise self.layout_error(f"data.root={self.root}{' is empty' if empty else ''}: {error}") from None

    def annotation_sets(self) -> dict[str, Callable[[Path, str], list[VideoRecord]]]:
        """Every set of annotations the root holds, by name, each a reader like ``annotations``: what
        ``src/prepare_data.py`` prepares the videos of. One here (named ""); a dataset with several official
        splits has one per split."""
        return {"": self.annotations}

    def records(self, split: str) -> list[VideoRecord]:
        """The records of ``split``, read once; "test" reads the split that ``eval_split`` chooses."""
        if split not in self._records:
            self._records[split] = self._read_split(split)
        return self._records[split]

    def _read_split(self, split: str) -> list[VideoRecord]:
        if split != "test" or self.eval_split == "test":
            return self._read(self.annotations, self.root, split)
        if self.eval_split == AUTO:
            try:
                return self.annotations(self.root, "test")
            except (FileNotFoundError, UnlabelledSplitError) as error:
                log.warning(
                    "no labelled test split (%s): testing on the validation split instead (data.eval_split=auto)",
                    error,
                )
        else:
            log.info("data.eval_split=val: testing on the validation split")
        return self.records("val")

    def read_annotations(self, *stages: str) -> None:
        """Reads and checks, now, the class table and the annotations of every split that ``stages`` ("fit",
        "validate", "test") use: called before training, so that no file missing for a later stage (the test
        split's, typically) fails after hours of it. A generated dataset is complete by construction, and does
        not exist before ``prepare_data``: nothing to read."""
        if self.generate is not None:
            return
        self.check_class_counts()
        for stage in stages:
            for split in STAGE_SPLITS[stage]:
                self.records(split)

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.check_class_counts()
        for split in STAGE_SPLITS[stage] if stage else ("train", "val", "test"):
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
            records = self.records(split)
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

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """On the device path, the photometric ops and normalisation of the batch's uint8 clips, where they now are."""
        if batch.get("video") is not None and batch["video"].dtype == torch.uint8:
            params = batch.pop("photometric", None) or [None] * len(batch["video"])
            batch["video"] = finish_clips(batch["video"], params, self.photometric, self.mean, self.std)
        return batch

    def videos(self, split: str) -> list[str]:
        """The distinct video files of ``split``, sorted (set up first; listed once): what
        :class:`vivit.training.bad_videos.BadVideos` counts failures against."""
        if split not in self._videos:
            self._videos[split] = sorted({str(record.path) for record in self.datasets[split].records})
        return self._videos[split]

    def train_dataloader(self) -> DataLoader:
        # Its order and random draws follow (seed, epoch, clip): exact mid-epoch resume, any device count.
        return ResumableLoader(self._loader("train"), self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
