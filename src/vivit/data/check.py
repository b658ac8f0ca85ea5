"""A dataset's problems, found before training: every annotation row and every video it references.

``python src/check_data.py data=<name> data.root=<dir>`` reads each split with the dataset's own annotation
reader (the rows it leaves out: unknown labels, missing videos) and checks each distinct video in a pool of
processes, with the data's decoder (``data.decoder``): it opens, has a video stream with frames that do not
stop before the duration its header declares, and the first and last frame of each segment decode (PyAV
decodes the frames before them on the way: for a whole file, the whole stream); a folder of JPEG frames has
every frame of each segment decoded. With
``data.target_fps``, the video's frame rate must be known. Segments too short for a clip are notes, not
errors: their clips repeat frames; so is a test split without labels when ``data.eval_split=auto`` tests on
the validation split instead. The report lists each problem with its split, file and rows.

This module imports only the decoder at the top: the pool's workers import it to run :func:`check_video`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vivit.data.decoding import VideoDecodeError, count_frames, decode_frames, frame_rate
from vivit.data.problems import Problem, ProblemReport, problems_table
from vivit.data.sampling import clip_span, resampled_length

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from vivit.data.datamodule import VideoDataModule
    from vivit.data.records import VideoRecord

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FOLDER_CHUNK = 64  # frames of a folder decoded at once
Segment = tuple[int, int | None]  # VideoRecord's (start, stop); stop None: the end of the file


@dataclass
class VideoCheck:
    """What :func:`check_video` found: the frame count (and frame rate, when asked for), or why the video is
    unusable; per segment, why its frames do not decode."""

    path: Path
    frames: int | None = None
    fps: float | None = None
    error: str | None = None
    segment_errors: dict[Segment, str] = field(default_factory=dict)


def check_video(path: Path, segments: Sequence[Segment], decoder: str = "pyav", fps: bool = False) -> VideoCheck:
    """Counts the frames of the video at ``path`` with ``decoder``, reads its frame rate when ``fps``, and
    decodes the first and last frame of each segment (of a folder of frames: every frame)."""
    try:
        frames = count_frames(path, decoder)  # fails on a missing file, no video stream, no frames, bad data
        rate = frame_rate(path, decoder) if fps else None
    except VideoDecodeError as error:
        return VideoCheck(path, error=error.reason)
    except ValueError as error:  # a folder of frames has no rate of its own
        return VideoCheck(path, error=str(error))
    check = VideoCheck(path, frames, rate)
    for start, stop in segments:
        end = frames if stop is None else stop
        if end > frames:
            check.segment_errors[start, stop] = f"segment {start}-{stop} ends after the last frame ({frames} frames)"
            continue
        wanted = list(range(start, end)) if path.is_dir() else sorted({start, end - 1})
        try:
            for first in range(0, len(wanted), FOLDER_CHUNK):
                decode_frames(path, wanted[first : first + FOLDER_CHUNK], decoder)
        except VideoDecodeError as error:
            check.segment_errors[start, stop] = error.reason
    return check


@dataclass
class DataCheck(ProblemReport):
    """The findings of :func:`check_data`: counts per split, every video's frame count, and the problems."""

    root: str
    num_frames: int
    stride: int
    splits: dict[str, dict[str, int]]  # split -> rows, dropped, videos, unreadable (videos with an error), notes
    videos: list[dict]  # {"file", "frames", "fps", "error"}, one per distinct video (fps: with data.target_fps)
    problems: list[Problem]

    def markdown(self, limit: int | None = None) -> str:
        """The split counts and the problems (errors first) as Markdown tables; at most ``limit`` problems."""
        errors = sum(problem.severity == "error" for problem in self.problems)
        lines = [
            f"# Data check of {self.root}",
            "",
            f"Clips of {self.num_frames} frames at stride {self.stride}. "
            + ("FAILED: fix the errors below, or expect dropped rows and replaced videos." if self.failed else "OK."),
            "",
            "| split | rows | dropped | videos | unreadable | notes |",
            "|---|---|---|---|---|---|",
        ]
        keys = ("rows", "dropped", "videos", "unreadable", "notes")
        lines += [f"| {split} | " + " | ".join(str(n[k]) for k in keys) + " |" for split, n in self.splits.items()]
        lines += ["", f"## Problems: {errors} errors, {len(self.problems) - errors} notes", ""]
        lines += problems_table(self.problems, limit)
        return "\n".join(lines) + "\n"


def check_data(datamodule: VideoDataModule, splits: Sequence[str] = SPLITS, workers: int | None = None) -> DataCheck:
    """Checks the annotation rows of ``splits`` and every video they reference, in ``workers`` processes
    (None: one per CPU; 0 or 1: in this process). Nothing is raised for a bad dataset: it is reported."""
    # Imported here, not at the top: the pool's workers need only the decoder.
    from vivit.data.annotations import UnlabelledSplitError
    from vivit.data.records import collect_dropped_rows

    found: list[tuple[str, str, str, str, str]] = []  # (split, file, row, problem, severity)
    try:
        datamodule.check_class_counts()
    except Exception as error:
        found.append(("all", str(datamodule.root), "", error_message(error), "error"))
    records, counts = {}, {}
    for split in splits:
        with collect_dropped_rows() as dropped:
            try:
                records[split] = datamodule.annotations(datamodule.root, split)
            except Exception as error:
                records[split] = []
                unlabelled = isinstance(error, (FileNotFoundError, UnlabelledSplitError))
                if split == "test" and unlabelled and getattr(datamodule, "eval_split", None) == "auto":
                    problem = f"{error_message(error)}: testing reads the validation split (data.eval_split=auto)"
                    found.append((split, str(datamodule.root), "", problem, "note"))
                else:
                    found.append((split, str(datamodule.root), "", error_message(error), "error"))
        found += [(split, str(row.file), row.name, f"{row.problem} (row of {row.source})", "error") for row in dropped]
        counts[split] = dict(rows=len(records[split]) + len(dropped), dropped=len(dropped))

    target_fps = datamodule.target_fps
    jobs: dict[Path, tuple[set[Segment], bool]] = {}  # video -> its segments, whether it must give its fps
    for record in (record for split_records in records.values() for record in split_records):
        spans, fps = jobs.get(record.path, (set(), False))
        jobs[record.path] = spans | {(record.start, record.stop)}, fps or bool(target_fps and record.fps is None)
    checks = {check.path: check for check in _check_videos(jobs, datamodule.decoder, workers)}

    for split, split_records in records.items():
        unreadable, notes = set(), 0
        for record in split_records:
            check, segment = checks[record.path], (record.start, record.stop)
            if check.error is not None:
                unreadable.add(record.path)
                found.append((split, str(record.path), record.name, check.error, "error"))
            elif segment in check.segment_errors:
                unreadable.add(record.path)
                found.append((split, str(record.path), record.name, check.segment_errors[segment], "error"))
            elif note := _short(record, check, datamodule.num_frames, datamodule.stride, target_fps):
                notes += 1
                found.append((split, str(record.path), record.name, note, "note"))
        videos = len({record.path for record in split_records})
        counts[split].update(videos=videos, unreadable=len(unreadable), notes=notes)

    return DataCheck(
        root=str(datamodule.root),
        num_frames=datamodule.num_frames,
        stride=datamodule.stride,
        splits=counts,
        videos=[{"file": str(c.path), "frames": c.frames, "fps": c.fps, "error": c.error} for c in checks.values()],
        problems=grouped(found),
    )


def _check_videos(
    videos: dict[Path, tuple[set[Segment], bool]], decoder: str, workers: int | None
) -> Iterable[VideoCheck]:
    """:func:`check_video` of each video, in a pool of processes started by forkserver: a process forked
    from this one could inherit a lock held by one of its threads (torch's, FFmpeg's) and hang."""
    jobs = [(path, list(spans), decoder, fps) for path, (spans, fps) in videos.items()]
    workers = (os.cpu_count() or 1) if workers is None else workers
    log.info("checking %d videos in %s", len(jobs), f"{workers} processes" if workers > 1 else "this process")
    if workers <= 1 or len(jobs) <= 1:
        yield from _logged((check_video(*job) for job in jobs), len(jobs))
        return
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        chunk = max(1, min(64, len(jobs) // (workers * 8)))
        yield from _logged(pool.map(check_video, *zip(*jobs), chunksize=chunk), len(jobs))


def _logged(results: Iterable[VideoCheck], total: int) -> Iterable[VideoCheck]:
    every = max(total // 10, 1)
    for done, result in enumerate(results, 1):
        if done % every == 0 or done == total:
            log.info("%d of %d videos checked", done, total)
        yield result


def _short(
    record: VideoRecord, check: VideoCheck, num_frames: int, stride: int, target_fps: float | None
) -> str | None:
    """A note when the record's segment is shorter than a clip's span (at ``target_fps``, when given): its
    clips loop, repeating frames (:func:`clip_indices`)."""
    length = (check.frames if record.stop is None else record.stop) - record.start
    rate = (record.fps or check.fps) / target_fps if target_fps else 1.0
    resampled, span = resampled_length(length, rate), clip_span(num_frames, stride)
    if resampled >= span:
        return None
    what = "the video" if record.stop is None else f"segment {record.start}-{record.stop}"
    at = f" ({resampled} at {target_fps:g} fps)" if target_fps else ""
    return (
        f"{what} has {length} frames{at}, fewer than the {span} of {num_frames} at stride {stride}: clips repeat frames"
    )


def grouped(found: list[tuple[str, str, str, str, str]]) -> list[Problem]:
    """One problem per (split, file, problem), listing its rows; errors first, then by split and file."""
    rows: dict[tuple[str, str, str, str], list[str]] = {}
    for split, file, row, problem, severity in found:
        rows.setdefault((split, file, problem, severity), []).extend([row] if row else [])
    problems = [
        Problem(split, file, tuple(names), problem, severity)
        for (split, file, problem, severity), names in rows.items()
    ]
    order = {split: i for i, split in enumerate(("all", *SPLITS))}
    return sorted(problems, key=lambda p: (p.severity != "error", order.get(p.split, len(order)), p.split, p.file))


def error_message(error: Exception) -> str:
    # The readers' ValueErrors and FileNotFoundErrors name the file; anything else also gets its type.
    return str(error) if isinstance(error, (ValueError, FileNotFoundError)) else f"{type(error).__name__}: {error}"


def run(cfg: DictConfig) -> int:
    """``src/check_data.py``: checks ``cfg.data``, prints the report and writes it as ``check_data.json``
    and ``check_data.md`` to ``cfg.out`` (default: the run directory). Returns the exit status: 1 when
    there are errors, else 0."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    splits = list(cfg.get("splits") or SPLITS)
    if unknown := sorted(set(splits) - set(SPLITS)):
        raise ValueError(f"splits={splits}: {unknown} not among {list(SPLITS)}")
    workers = cfg.get("workers")
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be null (one per CPU) or >= 0, got {workers}")
    report = check_data(instantiate(cfg.data), splits, workers)
    return report.write(Path(cfg.get("out") or HydraConfig.get().runtime.output_dir), "check_data")
