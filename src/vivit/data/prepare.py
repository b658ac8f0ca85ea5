"""A dataset prepared once for fast loading: every video re-encoded small and easy to seek, the annotations copied.

``python src/prepare_data.py data=<name> data.root=<raw> out=<prepared>`` reads each split with the dataset's
own annotation reader and re-encodes every video that the records reference, in a pool of processes:

- ``format=video``: to ``out`` at the same relative path and name, with the short side scaled down to
  ``short_side`` (never up), a keyframe at least every ``keyframe_interval`` frames (a seek then decodes
  fewer than that many extra frames), ``codec`` (libx264 or mpeg4) in yuv420p (even sizes), and the same
  frames: every decoded frame, in order, with index-based timestamps at the source's average frame rate
  (constant), so EPIC-KITCHENS' frame numbers keep pointing at the same frames. Audio is dropped. The
  container follows the suffix (.mp4: MP4, .mov: QuickTime), else Matroska: a ``.webm`` (SSv2) holds H.264
  in Matroska, which WebM restricts to VP8/VP9/AV1 but FFmpeg reads whatever the name, so every reader
  finds the file where it was.
- ``format=jpeg``: a folder of JPEG frames numbered from 1 (``frame_0000000001.jpg``) per video, where only
  the EPIC-KITCHENS reader looks for one: ``<participant>/rgb_frames/<video>/`` (train with
  ``data.annotations.frames=rgb_frames``). The other readers find their videos as files by name.

A source that is itself a folder of frames stays one (its frames resized, at the same path). Every output
is written under a temporary name, verified (it opens, has the source's frame count, and its first and
last frames decode at the expected size) and renamed into place, so a re-run skips what is done and
verified and redoes the rest. Every other file of the root (annotations, class lists) is copied as it
is; videos and images that no record references are left out. A bad source is reported with its reason
and the rows that use it; the others are still prepared.

This module imports only PyAV at the top: ``src/prepare_data.py`` calls :func:`check_options` before torch
is imported; the decoder (torch) is imported where it is used.
"""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
from av.video.reformatter import VideoReformatter

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from vivit.data.check import Problem
    from vivit.data.datamodule import VideoDataModule
    from vivit.data.records import VideoRecord

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FORMATS = ("video", "jpeg")
CODECS = ("libx264", "mpeg4")
TUNES = ("fastdecode", "film", "animation", "grain", "stillimage", "zerolatency")  # x264's, for tune=
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}  # any other suffix (.webm, .mkv, .avi): Matroska
MEDIA_SUFFIXES = (".mp4", ".m4v", ".webm", ".mkv", ".avi", ".mov", ".jpg", ".jpeg", ".png")  # not copied
JPEG_READERS = ("read_epic_kitchens_100",)  # readers that find a video's folder of frames (rgb_frames)
FRAME_NAME = "frame_{:010d}.jpg"  # EPIC-KITCHENS' names, numbered from 1
FRAME_CHUNK = 64  # frames of a source folder decoded at once
PARTIAL = ".partial"  # an output being written: .<name>.partial, renamed when verified
SETTINGS = ".prepare_data.json"  # in the copy: the settings of the run that started it


@dataclass(frozen=True)
class Encoding:
    """How each video is written (the options of ``conf/prepare_data.yaml``); ``decoder`` reads the sources
    and checks the outputs, as the loader will."""

    format: str = "video"
    short_side: int = 256
    keyframe_interval: int = 16
    codec: str = "mpeg4"
    crf: int = 18
    qscale: int = 3
    preset: str = "fast"
    tune: str | None = "fastdecode"
    jpeg_quality: int = 90
    decoder: str = "pyav"


@dataclass
class PreparedVideo:
    """What :func:`prepare_video` did with one source: ``status`` "prepared", "skipped" (done and verified
    by an earlier run) or "failed" (``error`` says why). Sizes are (width, height); bytes on disk."""

    source: Path
    output: Path
    status: str
    frames: int | None = None
    source_size: tuple[int, int] | None = None
    size: tuple[int, int] | None = None
    source_bytes: int = 0
    output_bytes: int = 0
    error: str | None = None


def target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled down to ``short_side`` (never up) and the long side in
    proportion, each rounded down to an even number (yuv420p): the aspect ratio is kept to within 2 pixels."""
    short = min(width, height)
    scale = min(short, short_side) / short
    return tuple(max(2, 2 * int(side * scale / 2 + 1e-6)) for side in (width, height))  # type: ignore[return-value]


def prepare_video(source: Path, output: Path, encoding: Encoding) -> PreparedVideo:
    """Writes ``source`` (a video file or a folder of frames) to ``output`` as ``encoding`` says, unless a
    verified output is already there. Never raises for a bad source: the result says what went wrong."""
    from vivit.data.decoding import VideoDecodeError, count_frames, decode_frames

    result = PreparedVideo(source, output, "failed")
    try:
        result.frames = count_frames(source, encoding.decoder)
        height, width = decode_frames(source, [0], encoding.decoder).shape[1:3]
    except VideoDecodeError as error:
        result.error = error.reason
        return result
    result.source_size, result.source_bytes = (width, height), _bytes(source)
    result.size = target_size(width, height, encoding.short_side)
    if output.exists() and verify_output(output, result.frames, result.size, encoding.decoder) is None:
        result.status, result.output_bytes = "skipped", _bytes(output)
        return result
    temporary = output.with_name(f".{output.name}{PARTIAL}")
    _remove(temporary)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if encoding.format == "jpeg" or source.is_dir():
            _write_jpegs(_frames(source, encoding.decoder), temporary, result.size, encoding.jpeg_quality)
        else:
            rate = _frame_rate(source)
            container = CONTAINERS.get(output.suffix.lower(), "matroska")
            _encode(_frames(source, encoding.decoder), temporary, container, rate, result.size, encoding)
        if reason := verify_output(temporary, result.frames, result.size, encoding.decoder):
            raise VideoDecodeError(output, f"the prepared copy {reason}")
        if output.is_dir():  # a broken folder from before: a folder cannot be renamed over another
            shutil.rmtree(output)
        os.replace(temporary, output)
    except Exception as error:  # the source turned out bad half-way (truncated, corrupt packets)
        _remove(temporary)
        result.error = error.reason if isinstance(error, VideoDecodeError) else f"{type(error).__name__}: {error}"
        return result
    result.status, result.output_bytes = "prepared", _bytes(output)
    return result


def verify_output(path: Path, frames: int, size: tuple[int, int], decoder: str = "pyav") -> str | None:
    """None when the video file or folder of frames at ``path`` is complete: it has ``frames`` frames, and
    its first and last decode at ``size`` (width, height); else what is wrong with it."""
    from vivit.data.decoding import VideoDecodeError, count_frames, decode_frames

    try:
        if path.is_dir():  # listed here, not by the decoder, which keeps each folder's first listing
            count, ends = _check_jpegs(path)
        else:
            count = count_frames(path, decoder)
            ends = decode_frames(path, [0, count - 1], decoder)
    except VideoDecodeError as error:
        return error.reason
    if count != frames:
        return f"has {count} frames, the source {frames}"
    found = [(frame.shape[1], frame.shape[0]) for frame in ends]
    if any(shape != size for shape in found):
        return f"has frames of {found[0][0]}x{found[0][1]}, expected {size[0]}x{size[1]}"
    return None


def _check_jpegs(folder: Path) -> tuple[int, list]:
    """The number of frames in a prepared folder (``frame_0000000001.jpg`` to N, none missing), and its
    first and last frame as (H, W, 3) arrays."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from vivit.data.decoding import VideoDecodeError

    count = sum(1 for entry in os.scandir(folder) if entry.name.startswith("frame_"))
    if count == 0 or not (folder / FRAME_NAME.format(count)).is_file():
        raise VideoDecodeError(folder, f"frames missing: {count} frames, but no {FRAME_NAME.format(count)}")
    ends = []
    for number in (1, count):
        try:
            image = decode_jpeg(read_file(str(folder / FRAME_NAME.format(number))), mode=ImageReadMode.RGB)
        except Exception as error:
            raise VideoDecodeError(folder, f"frame {number}: {type(error).__name__}: {error}") from error
        ends.append(image.permute(1, 2, 0).numpy())
    return count, ends


def _frames(source: Path, decoder: str) -> Iterator[av.VideoFrame]:
    """Every frame of ``source`` in order: the decoded frames of a video file (its frame i is the loader's
    frame i), or the JPEG files of a folder."""
    if source.is_dir():
        from vivit.data.decoding import count_frames, decode_frames

        total = count_frames(source, decoder)
        for first in range(0, total, FRAME_CHUNK):
            for image in decode_frames(source, list(range(first, min(first + FRAME_CHUNK, total))), decoder):
                yield av.VideoFrame.from_ndarray(image, format="rgb24")
        return
    with av.open(str(source)) as container:
        yield from container.decode(container.streams.video[0])


def _frame_rate(source: Path) -> Fraction:
    """The source's average frame rate: the rate of the copy, whose frames are evenly spaced."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise ValueError("the video stream has no frame rate")
    return Fraction(rate)


def _encode(
    frames: Iterable[av.VideoFrame],
    path: Path,
    container_format: str,
    rate: Fraction,
    size: tuple[int, int],
    encoding: Encoding,
) -> None:
    """Encodes ``frames`` at ``size`` into a new file: frame i at time i / rate, a keyframe at least every
    ``encoding.keyframe_interval`` frames."""
    width, height = size
    scale = VideoReformatter()  # one scaler for all frames
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(encoding.codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = encoding.keyframe_interval
        stream.codec_context.thread_count = 1  # the pool runs one process per CPU
        if encoding.codec == "libx264":
            stream.options = {"crf": str(encoding.crf), "preset": encoding.preset}
            if encoding.tune:
                stream.options["tune"] = encoding.tune
        else:  # a constant quantiser (the qscale flag alone leaves the quality to the frames, which have none)
            stream.codec_context.qmin = stream.codec_context.qmax = encoding.qscale
        for index, frame in enumerate(frames):
            frame = scale.reformat(frame, width, height, "yuv420p", interpolation="AREA", threads=1)
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _write_jpegs(frames: Iterable[av.VideoFrame], folder: Path, size: tuple[int, int], quality: int) -> None:
    """``frames`` at ``size`` as ``folder/frame_0000000001.jpg`` onwards."""
    import torch
    from torchvision.io import encode_jpeg, write_file

    width, height = size
    scale = VideoReformatter()
    folder.mkdir()
    for number, frame in enumerate(frames, start=1):
        image = scale.reformat(frame, width, height, "rgb24", interpolation="AREA", threads=1).to_ndarray()
        data = encode_jpeg(torch.from_numpy(image).permute(2, 0, 1).contiguous(), quality=quality)
        write_file(str(folder / FRAME_NAME.format(number)), data)


def _bytes(path: Path) -> int:
    """Bytes on disk of a file, or of the files of a folder."""
    if path.is_dir():
        return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
    return path.stat().st_size if path.exists() else 0


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# ---------------------------------------------------------------------------------------------- a dataset


@dataclass
class PreparedData:
    """The findings of :func:`prepare_data`: per-video results, sizes, sample times and the problems."""

    root: str
    out: str
    encoding: dict
    train_with: str  # the overrides that train on the prepared copy
    splits: dict[str, dict[str, int]]  # split -> records, videos, failed
    counts: dict[str, int]  # videos prepared, skipped, failed; annotation files copied; media files left out
    bytes: dict[str, int]  # videos before and after, annotation files copied
    seconds: float  # preparing the videos and copying the other files
    videos: list[dict]  # {"file", "output", "status", "frames", "source_size", "size", "error"}
    problems: list[Problem]
    # "raw" and "prepared": one training sample; "raw_decode", "prepared_decode": decoding its clip
    sample_seconds: dict[str, float | None] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """A video (or a split) could not be prepared, or the copy does not give the raw root's records."""
        return any(problem.severity == "error" for problem in self.problems)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "failed": self.failed}, indent=1)

    def markdown(self, limit: int | None = None) -> str:
        """Counts, sizes, sample times and the problems (errors first) as Markdown; at most ``limit`` problems."""
        from vivit.data.check import problems_table

        n, size = self.counts, self.bytes
        errors = sum(problem.severity == "error" for problem in self.problems)
        ratio = f" ({size['after'] / size['before']:.0%})" if size["before"] else ""
        lines = [
            f"# Prepared copy of {self.root}",
            "",
            f"In {self.out}, in {self.seconds:.0f} s: "
            + ("FAILED: see the errors below." if self.failed else "OK.")
            + f" Train on it with `{self.train_with}`.",
            "",
            f"- Videos: {n['prepared']} prepared, {n['skipped']} skipped (done before), {n['failed']} failed.",
            f"- Size of the videos: {_mib(size['before'])} before, {_mib(size['after'])} after{ratio}.",
            f"- Annotation files copied: {n['copied']} ({_mib(size['copied'])}); videos and images no record "
            f"uses, left out: {n['left_out']}.",
        ]
        times = self.sample_seconds
        if times.get("raw") and times.get("prepared"):
            lines.append(
                f"- One training sample (decode and transforms, median): {_speed(times['raw'], times['prepared'])}; "
                f"decoding its clip alone: {_speed(times['raw_decode'], times['prepared_decode'])}."
            )
        settings = ", ".join(f"{key}={value}" for key, value in self.encoding.items())
        lines += [f"- Settings: {settings}.", "", "| split | records | videos | failed |", "|---|---|---|---|"]
        lines += [f"| {split} | {c['records']} | {c['videos']} | {c['failed']} |" for split, c in self.splits.items()]
        lines += ["", f"## Problems: {errors} errors, {len(self.problems) - errors} notes", ""]
        lines += problems_table(self.problems, limit)
        return "\n".join(lines) + "\n"


def _speed(before: float, after: float) -> str:
    return f"{before * 1000:.1f} ms before, {after * 1000:.1f} ms after ({before / after:.1f}x as fast)"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def output_path(source: Path, root: Path, out: Path, format: str) -> Path:
    """Where ``source`` goes under ``out``: the same relative path, except that ``format=jpeg`` puts an
    EPIC-KITCHENS video ``P01/videos/P01_01.MP4`` in the folder ``P01/rgb_frames/P01_01``."""
    relative = source.relative_to(root)
    if format == "jpeg" and not source.is_dir():
        return out / relative.parent.parent / "rgb_frames" / relative.stem
    return out / relative


def prepare_data(
    datamodule: VideoDataModule,
    out: Path,
    encoding: Encoding,
    splits: Iterable[str] = SPLITS,
    workers: int | None = None,
    prepared: Callable[[Path, str], list[VideoRecord]] | None = None,
) -> PreparedData:
    """Prepares every video that the records of ``splits`` reference into ``out``, in ``workers`` processes
    (None: one per CPU; 0 or 1: this process), then copies the root's other files. ``prepared`` reads the
    copy's annotations (default: ``datamodule.annotations``): its records must be the raw root's, with the
    prepared paths. Nothing is raised for a bad video: it is reported."""
    from vivit.data.check import error_message, grouped
    from vivit.data.records import collect_dropped_rows

    began = time.perf_counter()
    root, out = datamodule.root, Path(out)
    found: list[tuple[str, str, str, str, str]] = []  # (split, file, row, problem, severity), as check_data
    records: dict[str, list[VideoRecord]] = {}
    for split in splits:
        with collect_dropped_rows() as dropped:
            try:
                records[split] = datamodule.annotations(root, split)
            except Exception as error:
                found.append((split, str(root), "", error_message(error), "error"))
        # rows that training leaves out too (unknown label, missing video): python src/check_data.py lists them
        found += [(split, str(row.file), row.name, f"{row.problem}: left out, as from the raw root", "note")
                  for row in dropped]  # fmt: skip

    sources = sorted({record.path for split_records in records.values() for record in split_records})
    jobs = {source: output_path(source, root, out, encoding.format) for source in sources}
    finished = {result.source: result for result in _prepare_videos(jobs, encoding, workers)}
    results = {source: finished[source] for source in sources}  # in the order of the paths
    counts = {status: sum(r.status == status for r in results.values()) for status in ("prepared", "skipped")}
    counts["failed"] = len(results) - sum(counts.values())
    done = [result for result in results.values() if result.status != "failed"]
    copied, copied_bytes, left_out = copy_other_files(root, out, set(sources))
    counts.update(copied=copied, left_out=len(left_out))
    if left_out:
        first = ", ".join(str(path.relative_to(root)) for path in left_out[:3])
        found.append(("all", str(root), "", f"videos or images that no record uses, not copied: {len(left_out)} "
                      f"(first: {first})", "note"))  # fmt: skip

    split_counts = {}
    for split, split_records in records.items():
        failed = {record.path for record in split_records if results[record.path].status == "failed"}
        for record in split_records:
            if record.path in failed:
                found.append((split, str(record.path), record.name, results[record.path].error, "error"))
        videos = len({record.path for record in split_records})
        split_counts[split] = dict(records=len(split_records), videos=videos, failed=len(failed))
        expected = [_key(record, jobs[record.path]) for record in split_records if record.path not in failed]
        if expected and (difference := _compare(prepared or datamodule.annotations, out, split, expected)):
            found.append((split, str(out), "", difference, "error"))

    return PreparedData(
        root=str(root),
        out=str(out),
        encoding=asdict(encoding),
        train_with="",
        splits=split_counts,
        counts=counts,
        bytes=dict(
            before=sum(r.source_bytes for r in done), after=sum(r.output_bytes for r in done), copied=copied_bytes
        ),
        seconds=time.perf_counter() - began,
        videos=[
            {
                "file": str(r.source),
                "output": str(r.output),
                "status": r.status,
                "frames": r.frames,
                "source_size": r.source_size,
                "size": r.size,
                "error": r.error,
            }
            for r in results.values()
        ],
        problems=grouped(found),
    )


def _key(record: VideoRecord, path: Path) -> tuple:
    """What must stay the same in the copy: the record, with its video at ``path``."""
    return (record.name, tuple(sorted(record.labels.items())), record.start, record.stop, record.fps, str(path))


def _compare(reader: Callable[[Path, str], list[VideoRecord]], out: Path, split: str, expected: list) -> str | None:
    """None when the copy's records of ``split`` are ``expected`` (:func:`_key`), else the difference."""
    from vivit.data.records import collect_dropped_rows

    try:
        with collect_dropped_rows():  # rows without a prepared video: reported above, as failed videos
            found = [_key(record, record.path) for record in reader(out, split)]
    except Exception as error:
        return f"the prepared copy's annotations do not read: {type(error).__name__}: {error}"
    if sorted(found) == sorted(expected):
        return None
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    return (
        f"the prepared copy gives other records than the raw root: {len(missing)} missing (first: "
        f"{missing[0][0] if missing else '-'}), {len(extra)} others (first: {extra[0][0] if extra else '-'})"
    )


def _prepare_videos(jobs: dict[Path, Path], encoding: Encoding, workers: int | None) -> Iterator[PreparedVideo]:
    """:func:`prepare_video` of each (source, output), in a pool of processes started by forkserver (as
    ``vivit.data.check``: a process forked from this one could inherit a held lock and hang)."""
    workers = (os.cpu_count() or 1) if workers is None else workers
    log.info("preparing %d videos in %s", len(jobs), f"{workers} processes" if workers > 1 else "this process")
    if workers <= 1 or len(jobs) <= 1:
        yield from _progress((prepare_video(s, o, encoding) for s, o in jobs.items()), len(jobs))
        return
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context)
    try:
        futures = [pool.submit(prepare_video, source, output, encoding) for source, output in jobs.items()]
        yield from _progress((future.result() for future in as_completed(futures)), len(jobs))
    finally:
        pool.shutdown(cancel_futures=True)  # Ctrl-C: the videos not started yet are left for the re-run


def _progress(results: Iterable[PreparedVideo], total: int) -> Iterator[PreparedVideo]:
    """A progress bar on a terminal (tqdm, which Lightning installs), else a log line every tenth."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        results = tqdm(results, total=total, unit="video", desc="prepare_data")
    counts = dict(prepared=0, skipped=0, failed=0)
    every = max(total // 10, 1)
    for done, result in enumerate(results, 1):
        counts[result.status] += 1
        if result.status == "failed":
            log.warning("%s: %s", result.source, result.error)
        if done == total or (done % every == 0 and not sys.stderr.isatty()):
            log.info("%d of %d videos done: %s", done, total, ", ".join(f"{n} {s}" for s, n in counts.items()))
        yield result


def copy_other_files(root: Path, out: Path, videos: set[Path]) -> tuple[int, int, list[Path]]:
    """Copies every file under ``root`` that is not a video or an image to the same relative path under
    ``out`` (a file already there with the same size and time is kept). Returns the number of files and
    their bytes, and the video files and images that none of ``videos`` holds (left out)."""
    copied, size, left_out = 0, 0, []
    for folder, folders, files in os.walk(root):
        folder = Path(folder)
        folders[:] = sorted(name for name in folders if folder / name not in videos)  # prepared as a whole
        for name in sorted(files):
            source = folder / name
            if source.suffix.lower() in MEDIA_SUFFIXES:
                if source not in videos:
                    left_out.append(source)
                continue
            target = out / source.relative_to(root)
            stat = source.stat()
            there = target.stat() if target.is_file() else None
            if there is None or (there.st_size, there.st_mtime) != (stat.st_size, stat.st_mtime):
                target.parent.mkdir(parents=True, exist_ok=True)
                temporary = target.with_name(f".{target.name}{PARTIAL}")
                shutil.copy2(source, temporary)
                os.replace(temporary, target)
            copied, size = copied + 1, size + stat.st_size
    return copied, size, left_out


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


def reencode(source: Path, output: Path, **options) -> PreparedVideo:
    """Prepares one video as ``src/prepare_data.py`` does; ``options`` are fields of :class:`Encoding`, e.g.
    ``short_side=256``. Raises a ``VideoDecodeError`` when the source cannot be prepared."""
    from vivit.data.decoding import VideoDecodeError

    result = prepare_video(Path(source), Path(output), Encoding(**options))
    if result.status == "failed":
        raise VideoDecodeError(source, result.error)
    return result


# ---------------------------------------------------------------------------------------------- the command


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


def run(cfg: DictConfig) -> int:
    """``src/prepare_data.py``: prepares ``cfg.data`` into ``cfg.out``, times a training sample on both
    roots, prints the report and writes it as ``prepare_data.json`` and ``prepare_data.md`` to
    ``cfg.report`` (default: the run directory). Returns the exit status: 1 when anything was bad, else 0."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from vivit.data.check import Problem

    check_options(cfg)
    encoding, out = encoding_options(cfg), Path(cfg.out)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # the built-in data generates itself
    if datamodule.min_resize is not None and cfg.short_side < datamodule.min_resize:
        log.warning(
            "short_side=%d is below data.min_resize=%d: the loader will scale the copy up again; use at least %d",
            cfg.short_side, datamodule.min_resize, datamodule.min_resize,
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    prepared_cfg = prepared_data_config(cfg)
    frames = prepared_cfg.data.annotations.get("frames")
    reader = datamodule.annotations if frames is None else instantiate(prepared_cfg.data.annotations)
    report = prepare_data(datamodule, out, encoding, list(cfg.splits), cfg.workers, reader)
    if changed := _changed_settings(out, encoding):
        report.problems.append(
            Problem("all", str(out), (), f"{changed} in an earlier run: the videos it made are kept where they "
                    "verify (frames and size); use another out to encode them all with these settings", "note")
        )  # fmt: skip

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
            )  # fmt: skip
        )
    if cfg.speed_samples:
        for name, data in (("raw", cfg.data), ("prepared", prepared_cfg.data)):
            try:
                times = sample_seconds(instantiate(data), cfg.speed_samples)
            except Exception as error:
                times = (None, None)
                report.problems.append(Problem("all", str(data.root), (), f"sample not timed: {error}", "note"))
            report.sample_seconds.update({name: times[0], f"{name}_decode": times[1]})

    where = Path(cfg.get("report") or HydraConfig.get().runtime.output_dir)
    where.mkdir(parents=True, exist_ok=True)
    (where / "prepare_data.json").write_text(report.to_json())
    (where / "prepare_data.md").write_text(report.markdown())
    print(report.markdown(limit=50))
    print(f"Report: {where / 'prepare_data.md'} and {where / 'prepare_data.json'}")
    return 1 if report.failed else 0
