"""A dataset prepared: every video that the records of the splits reference, in a pool of processes, the root's
other files copied, and the copy's records compared with the raw root's."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from vivit.data.annotations import VIDEO_SUFFIXES  # no torch
from vivit.data.prepare.report import PreparedData
from vivit.data.prepare.video import PARTIAL, Encoding, PreparedVideo, prepare_video

if TYPE_CHECKING:
    from vivit.data.datamodule import VideoDataModule
    from vivit.data.records import VideoRecord

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MEDIA_SUFFIXES = (*VIDEO_SUFFIXES, ".jpg", ".jpeg", ".png")  # not copied


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
    copy's annotations (default: the readers of the raw root): its records must be the raw root's, with the
    prepared paths. A dataset with official splits (:meth:`VideoDataModule.annotation_sets`) is prepared for
    all of them, whichever ``data.split`` is given. Nothing is raised for a bad video: it is reported."""
    from vivit.data.check import error_message, grouped
    from vivit.data.records import collect_dropped_rows

    began = time.perf_counter()
    root, out = datamodule.root, Path(out)
    found: list[tuple[str, str, str, str, str]] = []  # (split, file, row, problem, severity), as check_data
    records: dict[str, list[VideoRecord]] = {}
    readers: dict[str, tuple[Callable, str]] = {}  # "train" or "split 2 train" -> its reader and split
    for name, reader in datamodule.annotation_sets().items():
        for split in splits:
            key = f"{name} {split}".strip()
            with collect_dropped_rows() as dropped:
                try:
                    records[key], readers[key] = reader(root, split), (reader, split)
                except Exception as error:
                    found.append((key, str(root), "", error_message(error), "error"))
            # rows that training leaves out too (unknown label, missing video): python src/check_data.py lists them
            note = "left out, as from the raw root"
            found += [(key, str(row.file), row.name, f"{row.problem}: {note}", "note") for row in dropped]

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
        problem = f"videos or images that no record uses, not copied: {len(left_out)} (first: {first})"
        found.append(("all", str(root), "", problem, "note"))

    split_counts = {}
    for split, split_records in records.items():
        failed = {record.path for record in split_records if results[record.path].status == "failed"}
        for record in split_records:
            if record.path in failed:
                found.append((split, str(record.path), record.name, results[record.path].error, "error"))
        videos = len({record.path for record in split_records})
        split_counts[split] = dict(records=len(split_records), videos=videos, failed=len(failed))
        expected = [_key(record, jobs[record.path]) for record in split_records if record.path not in failed]
        reader, part = readers[split]
        if expected and (difference := _compare(prepared or reader, out, part, expected)):
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


def output_path(source: Path, root: Path, out: Path, format: str) -> Path:
    """Where ``source`` goes under ``out``: the same relative path, except that ``format=jpeg`` puts an
    EPIC-KITCHENS video ``P01/videos/P01_01.MP4`` in the folder ``P01/rgb_frames/P01_01``."""
    relative = source.relative_to(root)
    if format == "jpeg" and not source.is_dir():
        return out / relative.parent.parent / "rgb_frames" / relative.stem
    return out / relative


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
