"""``src/prepare_data.py``: its options checked (before torch is imported), the dataset prepared, a training sample
timed on both roots, and the report written."""

from __future__ import annotations

import copy
import json
import logging
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import av

from vivit.data.prepare.dataset import SPLITS, prepare_data
from vivit.data.prepare.video import Encoding

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from vivit.data.datamodule import VideoDataModule

log = logging.getLogger(__name__)

FORMATS = ("video", "jpeg")
CODECS = ("libx264", "mpeg4")
TUNES = ("fastdecode", "film", "animation", "grain", "stillimage", "zerolatency")  # x264's, for tune=
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
JPEG_READERS = ("read_epic_kitchens_100",)  # readers that find a video's folder of frames (rgb_frames)
SETTINGS = ".prepare_data.json"  # in the copy: the settings of the run that started it


def run(cfg: DictConfig) -> int:
    """``src/prepare_data.py``: prepares ``cfg.data`` into ``cfg.out``, times a training sample on both
    roots, prints the report and writes it as ``prepare_data.json`` and ``prepare_data.md`` to
    ``cfg.report`` (default: the run directory). Returns the exit status: 1 when anything was bad, else 0."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from vivit.data.problems import Problem

    check_options(cfg)
    encoding, out = encoding_options(cfg), Path(cfg.out)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # the built-in data generates itself
    if datamodule.min_resize is not None and cfg.short_side < datamodule.min_resize:
        log.warning(
            "short_side=%d is below data.min_resize=%d: the loader will scale the copy up again; use at least %d",
            cfg.short_side,
            datamodule.min_resize,
            datamodule.min_resize,
        )
    out.mkdir(parents=True, exist_ok=True)
    prepared_cfg = prepared_data_config(cfg)
    frames = prepared_cfg.data.annotations.get("frames")
    reader = None if frames is None else instantiate(prepared_cfg.data.annotations)  # None: the raw root's readers
    report = prepare_data(datamodule, out, encoding, list(cfg.splits), cfg.workers, reader)
    if changed := _changed_settings(out, encoding):
        message = (
            f"{changed} in an earlier run: the videos it made are kept where they verify (frames and size); "
            "use another out to encode them all with these settings"
        )
        report.problems.append(Problem("all", str(out), (), message, "note"))

    report.train_with = "python src/train.py " + " ".join(training_overrides(cfg))
    resized = any(video["size"] != video["source_size"] for video in report.videos if video["size"])
    if resized and datamodule.min_resize is None:
        report.problems.append(
            Problem(
                "all",
                str(out),
                (),
                "data.min_resize is null: clips are cropped from the frames as stored, "
                "so the resized videos give crops of another scale than the raw ones",
                "note",
            )
        )
    if cfg.speed_samples:
        for name, data in (("raw", cfg.data), ("prepared", prepared_cfg.data)):
            try:
                times = sample_seconds(instantiate(data), cfg.speed_samples)
            except Exception as error:
                times = (None, None)
                report.problems.append(Problem("all", str(data.root), (), f"sample not timed: {error}", "note"))
            report.sample_seconds.update({name: times[0], f"{name}_decode": times[1]})

    return report.write(Path(cfg.get("report") or HydraConfig.get().runtime.output_dir), "prepare_data")


def check_options(cfg: DictConfig) -> None:
    """Fails, naming the key, on an option that cannot prepare the dataset (no torch: before its import)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(cfg, "out") or not cfg.out:
        raise ValueError("out=<dir> is required: the directory that the prepared copy goes to")
    root, out = Path(cfg.data.root).resolve(), Path(cfg.out).resolve()
    if out == root or root in out.parents or out in root.parents:
        raise ValueError(f"out={cfg.out} must be a directory outside data.root={cfg.data.root}, and not hold it")
    ranges = dict(short_side=(2, None), keyframe_interval=(1, None), crf=(0, 51), qscale=(1, 31))
    ranges.update(jpeg_quality=(1, 100), speed_samples=(0, None))
    for key, (low, high) in ranges.items():
        value = cfg[key]
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            raise ValueError(f"{key}={value!r}: expected a whole number from {low}" + (f" to {high}" if high else ""))
    if cfg.workers is not None and cfg.workers < 0:
        raise ValueError(f"workers must be null (one per CPU) or >= 0, got {cfg.workers}")
    if unknown := sorted(set(cfg.splits) - set(SPLITS)):
        raise ValueError(f"splits={list(cfg.splits)}: {unknown} not among {list(SPLITS)}")
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}: choose one of {list(FORMATS)}")
    if cfg.codec not in CODECS:
        raise ValueError(f"codec={cfg.codec!r}: choose one of {list(CODECS)}")
    if cfg.codec not in av.codecs_available:
        raise ValueError(f"codec={cfg.codec}: this PyAV build has no such encoder; try another of {list(CODECS)}")
    if cfg.codec == "libx264" and cfg.preset not in PRESETS:
        raise ValueError(f"preset={cfg.preset!r}: choose one of {list(PRESETS)}")
    if cfg.codec == "libx264" and cfg.tune is not None and cfg.tune not in TUNES:
        raise ValueError(f"tune={cfg.tune!r}: choose null or one of {list(TUNES)}")
    reader = str(cfg.data.annotations.get("_target_", ""))
    if cfg.format == "jpeg" and not reader.endswith(JPEG_READERS):
        raise ValueError(
            f"format=jpeg: data={_dataset_name(cfg)} cannot read the copy: its reader ({reader}) looks for each "
            "video at the file that its annotations name, not at a folder of frames. Only EPIC-KITCHENS-format "
            "data (data=epic_kitchens_100, moving_digits, moving_digits_action) reads folders of frames, as "
            "<participant>/rgb_frames/<video>/ with data.annotations.frames=rgb_frames. Use format=video"
        )


def _dataset_name(cfg: DictConfig) -> str:
    """The data config's name (``data=<name>``), or its annotation reader outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and (name := HydraConfig.get().runtime.choices.get("data")):
        return name
    return str(cfg.data.annotations.get("_target_", "?")).rpartition(".")[2]


def encoding_options(cfg: DictConfig) -> Encoding:
    """The :class:`Encoding` that ``cfg`` asks for."""
    return Encoding(
        format=cfg.format,
        short_side=cfg.short_side,
        keyframe_interval=cfg.keyframe_interval,
        codec=cfg.codec,
        crf=cfg.crf,
        qscale=cfg.qscale,
        preset=cfg.preset,
        tune=cfg.tune,
        jpeg_quality=cfg.jpeg_quality,
        decoder=cfg.data.get("decoder", "pyav"),
    )


def prepared_data_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with the data config that reads the prepared copy: ``data.root=<out>``, and with
    ``format=jpeg``, ``data.annotations.frames=rgb_frames``."""
    from omegaconf import open_dict

    prepared = copy.deepcopy(cfg)
    with open_dict(prepared):
        prepared.data.root = str(cfg.out)
        if cfg.format == "jpeg":
            prepared.data.annotations.frames = "rgb_frames"
    return prepared


def _changed_settings(out: Path, encoding: Encoding) -> str | None:
    """The settings that differ from those recorded in ``out`` by the run that started the copy (which this
    run records when it is the first), as ``crf=18, preset=fast``; None when they are the same."""
    settings = {key: value for key, value in asdict(encoding).items() if key != "decoder"}
    path = out / SETTINGS
    if not path.is_file():
        path.write_text(json.dumps(settings, indent=1) + "\n")
        return None
    earlier = json.loads(path.read_text())
    changed = [f"{key}={value}" for key, value in earlier.items() if settings.get(key) != value]
    return ", ".join(changed) or None


def training_overrides(cfg: DictConfig) -> list[str]:
    """The command-line overrides that train on the copy: this run's ``data`` ones, with ``data.root=<out>``
    (and with ``format=jpeg``, ``data.annotations.frames=rgb_frames``)."""
    from vivit.config import hydra_overrides

    given = {key: value for key, value in hydra_overrides().items() if key.split(".")[0] == "data"}
    given = {"data": _dataset_name(cfg), **given, "data.root": str(cfg.out)}
    if cfg.format == "jpeg":
        given.pop("data.annotations.frames", None)
        given[("" if "frames" in cfg.data.annotations else "+") + "data.annotations.frames"] = "rgb_frames"
    return [f"{key}={value}" for key, value in given.items()]


def sample_seconds(datamodule: VideoDataModule, samples: int) -> tuple[float, float]:
    """Median seconds of one training sample of ``datamodule`` (decode and transforms), and of decoding its
    clip alone, over ``samples`` items spread over its training split, after one untimed item; the same random
    draws on every root, on one thread, as in a DataLoader worker."""
    import torch

    from vivit.data.decoding import count_frames, decode_frames, frame_rate
    from vivit.data.sampling import clip_indices

    datamodule.setup("fit")
    dataset, decoder, target_fps = datamodule.datasets["train"], datamodule.decoder, datamodule.target_fps
    items = sorted({round(i * (len(dataset) - 1) / max(samples - 1, 1)) for i in range(samples)})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    whole, decoding = [], []
    try:
        dataset[items[0]]  # first use: imports, caches
        torch.manual_seed(0)
        for item in items:
            start = time.perf_counter()
            dataset[item]
            whole.append(time.perf_counter() - start)
            record = dataset.records[item]  # training: one view per record
            stop = count_frames(record.path, decoder) if record.stop is None else record.stop
            rate = (record.fps or frame_rate(record.path, decoder)) / target_fps if target_fps else 1.0
            span = clip_indices(stop - record.start, datamodule.num_frames, datamodule.stride, offset=0.5, rate=rate)
            start = time.perf_counter()
            decode_frames(record.path, [record.start + i for i in span], decoder)
            decoding.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(whole), statistics.median(decoding)
