"""Decode just the frames a clip needs: from a video file (PyAV or torchcodec) or a folder of JPEG frames.

A clip's source is a video file, decoded by the backend ``data.decoder`` names (:data:`DECODERS`), or a
folder of its frames as JPEG files, e.g. EPIC-KITCHENS' ``P01/rgb_frames/P01_01/frame_0000000001.jpg``.
Every backend has the same contract: frames are 0-based, any index may repeat, and anything that makes
the source unusable raises a :class:`VideoDecodeError` that names it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from torchvision.io import ImageReadMode, decode_jpeg, read_file


class VideoDecodeError(RuntimeError):
    """A video could not be decoded into the requested frames; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot decode {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@contextmanager
def _unusable_as_decode_error(path: str | Path) -> Iterator[None]:
    """FileNotFoundError, av.error.InvalidDataError, ...: all mean "unusable file", named in a VideoDecodeError."""
    try:
        yield
    except VideoDecodeError:
        raise
    except Exception as error:
        raise VideoDecodeError(path, f"{type(error).__name__}: {error}") from error


@dataclass(frozen=True)
class Decoder:
    """One way of reading a clip's source: its frame count, its frame rate (None: it has none) and the frames
    at given indices. ``decode_frames`` gets a non-empty list of indices >= 0 and returns uint8 RGB
    ``(T, H, W, 3)``; the public functions below check the indices and name the source in any error.
    """

    count_frames: Callable[[Path], int]
    frame_rate: Callable[[Path], float] | None
    decode_frames: Callable[[Path, list[int]], np.ndarray]


def count_frames(path: str | Path, decoder: str = "pyav") -> int:
    """Number of frames of the video file (counted by ``decoder``) or of the folder of frames at ``path``."""
    source = _source(Path(path), decoder)
    with _unusable_as_decode_error(path):
        count = source.count_frames(Path(path))
    if count == 0:
        raise VideoDecodeError(path, "the video stream has no frames")
    return count


def frame_rate(path: str | Path, decoder: str = "pyav") -> float:
    """Frames per second of the video file at ``path``: its video stream's average rate.

    A folder of frames has none: ``ValueError``, since only the annotations can give it.
    """
    source = _source(Path(path), decoder)
    if source.frame_rate is None:
        raise ValueError(
            f"{path} is a folder of frames, which has no frame rate: data.target_fps needs the annotations to "
            "give it (EPIC-KITCHENS-100: EPIC_100_video_info.csv; data=video_csv: an fps column)"
        )
    with _unusable_as_decode_error(path):
        rate = source.frame_rate(Path(path))
    if not rate > 0:
        raise VideoDecodeError(path, "the video stream has no frame rate")
    return rate


def decode_frames(path: str | Path, indices: Sequence[int], decoder: str = "pyav") -> np.ndarray:
    """Frames at 0-based ``indices`` (may repeat, any order) as uint8 RGB ``(T, H, W, 3)``, T = len(indices)."""
    if len(indices) == 0 or min(indices) < 0:
        raise ValueError(f"indices must be a non-empty sequence of frame positions >= 0, got {list(indices)}")
    source = _source(Path(path), decoder)
    with _unusable_as_decode_error(path):
        return source.decode_frames(Path(path), list(indices))


def get_decoder(name: str) -> Decoder:
    """The video backend ``name`` (a key of :data:`DECODERS`); fails, saying how to fix it, when unusable."""
    if name not in DECODERS:
        raise ValueError(f"data.decoder={name!r} is not a decoder: choose one of {sorted(DECODERS)}")
    return DECODERS[name]()


def _source(path: Path, decoder: str) -> Decoder:
    """How to read ``path``: as a folder of frames, or with the video backend ``decoder``."""
    return FRAME_FOLDER if path.is_dir() else get_decoder(decoder)


# ---------------------------------------------------------------------------------------------- PyAV


@dataclass(frozen=True)
class FrameIndex:
    """Where a video file's frames are, from one pass over its packets (no decoding): frame i is presented at
    ``pts[i]`` (sorted; None: some packet has no timestamp) and starts a GOP when i is in ``keyframes``."""

    count: int
    pts: np.ndarray | None  # (count,) int64
    keyframes: np.ndarray  # (K,) int64 frame positions, ascending


def frame_index(path: str | Path) -> FrameIndex:
    """The :class:`FrameIndex` of the video file at ``path``, kept per process for the last files read (a
    re-written file is read again). Container metadata (``stream.frames``) is absent from WebM and not
    trusted elsewhere: the frames are the packets the decoder would turn into frames. A file whose frames stop
    well before the duration its header declares was cut short: a :class:`VideoDecodeError` says so."""
    stat = os.stat(path)
    return _frame_index(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _frame_index(path: str, mtime_ns: int, size: int) -> FrameIndex:
    with av.open(path) as container:
        stream = _video_stream(container, path)
        pts, keys, durations = [], [], {}
        for packet in container.demux(stream):
            if packet.size and not packet.is_discard:
                pts.append(packet.pts)
                keys.append(packet.pts if packet.is_keyframe else None)
                durations[packet.pts] = packet.duration
        declared, time_base, rate = _declared_duration(container, stream), stream.time_base, stream.average_rate
    if None in pts:
        return FrameIndex(len(pts), None, np.zeros(1, dtype=np.int64))
    order = np.array(pts, dtype=np.int64)
    order.sort()
    if pts and declared:
        last = durations[int(order[-1])]  # how long the last frame is shown, when the file says
        _check_complete(path, order, float(time_base), float(rate or 0), declared, last)
    keyframes = np.searchsorted(order, [key for key in keys if key is not None])
    return FrameIndex(len(pts), order, np.unique(keyframes))


ENDS_EARLY = (0.25, 0.1)  # seconds, fraction: how far before its declared end a file's frames may stop


def _declared_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """Seconds of video that the file's header declares: the video stream's duration (MP4, AVI), else its
    ``DURATION`` tag (WebM and MKV, as FFmpeg writes them), else the container's when the video is its only
    stream (an audio track may run longer); None when it declares none."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if match := re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", stream.metadata.get("DURATION", "")):
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if len(container.streams) == 1 and container.duration and container.duration > 0:
        return container.duration / av.time_base
    return None


def _check_complete(
    path: str, pts: np.ndarray, time_base: float, rate: float, declared: float, last: int | None = None
) -> None:
    """Raises when the frames at sorted timestamps ``pts`` stop well before the ``declared`` end (seconds,
    :data:`ENDS_EARLY`): the file was cut short (an interrupted download or copy). A video that is short by
    design declares its short length. The last frame counts for its own duration (``last``, in ``time_base``
    units) where the file gives one, so a video whose last frame stays on screen (a screen recording, a
    slideshow) is whole; else for one frame at ``rate``."""
    if last:
        frame = last * time_base
    else:
        frame = 1 / rate if rate > 0 else float(np.median(np.diff(pts))) * time_base if len(pts) > 1 else 0.0
    end = float(pts[-1] - pts[0]) * time_base + frame  # seconds of frames in the file
    if declared - end > max(ENDS_EARLY[0], ENDS_EARLY[1] * declared):
        raise VideoDecodeError(
            path,
            f"it ends early: its {len(pts)} frames cover {end:.2f} s of the {declared:.2f} s its header declares "
            "(the file was cut short)",
        )


def _pyav_frame_rate(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(_video_stream(container, path).average_rate or 0)


def _pyav_decode_frames(path: Path, indices: list[int]) -> np.ndarray:
    """Seeks to the keyframe before the first wanted frame, decodes up to the last one and converts only the
    wanted ones. Frames are found by their timestamps (:func:`frame_index`); a file without them (or whose
    frames are not where they say) is decoded from the start, counting frames."""
    index, wanted = frame_index(path), set(indices)
    if max(wanted) >= index.count:
        raise VideoDecodeError(path, f"no frame at index {max(wanted)} (the video has {index.count})")
    # `with` closes the container even on error: an open one can deadlock forked DataLoader workers.
    frames = {}
    if index.pts is not None:
        with av.open(str(path)) as container:
            frames = _decode_by_timestamp(_video_stream(container, path), index, wanted)
    if wanted - frames.keys():  # no timestamps, or frames that are not where their timestamps say
        with av.open(str(path)) as container:
            frames = _decode_from_start(_video_stream(container, path), wanted)
    if missing := wanted - frames.keys():
        raise VideoDecodeError(path, f"frame {min(missing)} did not decode (the video has {index.count} packets)")
    return np.stack([frames[i] for i in indices])


def _video_stream(container: av.container.InputContainer, path: str | Path) -> av.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(path, "no video stream")
    return container.streams.video[0]


def _decode_from_start(stream: av.VideoStream, wanted: set[int]) -> dict[int, np.ndarray]:
    # One converter for all frames: frame.to_ndarray(format="rgb24") would set up a new one per frame (~3x slower).
    frames, last, rgb = {}, max(wanted), VideoReformatter()
    for position, frame in enumerate(stream.container.decode(stream)):
        if position in wanted:
            frames[position] = rgb.reformat(frame, format="rgb24").to_ndarray()  # (H, W, 3) uint8
        if position >= last:
            break
    return frames


def _decode_by_timestamp(stream: av.VideoStream, index: FrameIndex, wanted: set[int]) -> dict[int, np.ndarray]:
    """From the keyframe at or before the first wanted frame (the file's start needs no seek) to the last one.
    The decoder skips the pictures that no other picture refers to (B-frames, mostly) unless they are wanted:
    a clip at stride 2 of an H.264 file with B-frames decodes about 15% faster."""
    first, last = min(wanted), max(wanted)
    key = int(index.keyframes[max(np.searchsorted(index.keyframes, first, side="right") - 1, 0)])
    if 0 < key <= first:
        stream.container.seek(int(index.pts[key]), stream=stream, backward=True, any_frame=False)
    position = {int(pts): i for i, pts in enumerate(index.pts[: last + 1])}
    frames, rgb, end, codec = {}, VideoReformatter(), int(index.pts[last]), stream.codec_context
    for packet in stream.container.demux(stream):
        codec.skip_frame = "DEFAULT" if position.get(packet.pts) in wanted or packet.pts is None else "NONREF"
        for frame in codec.decode(packet):  # the last, empty packet flushes the decoder
            i = position.get(frame.pts)
            if i in wanted:
                frames[i] = rgb.reformat(frame, format="rgb24").to_ndarray()  # (H, W, 3) uint8
            if frame.pts is None or frame.pts >= end:
                return frames
    return frames


# ---------------------------------------------------------------------------------------------- torchcodec


def _torchcodec_decoder() -> Decoder:
    """torchcodec's ``VideoDecoder`` in exact seek mode (it scans the file once, so frame positions are exact).
    The frames are counted, and a file cut short is named, by the packet index (:func:`frame_index`) as for
    PyAV: torchcodec alone takes a cut WebM or MKV for a shorter video, and decodes the frames it has. An
    optional package: importing it needs FFmpeg's shared libraries (4 to 8)."""
    try:
        import torchcodec
    except ImportError as error:
        raise ImportError(
            f"data.decoder=torchcodec needs the torchcodec package ({error}): pip install torchcodec (a release "
            "built for your torch version), with FFmpeg's shared libraries installed (e.g. apt-get install "
            "ffmpeg), or use data.decoder=pyav"
        ) from error
    if getattr(torchcodec, "ffmpeg_major_version", 0) is None:
        raise ImportError(
            "data.decoder=torchcodec: torchcodec is installed but finds no FFmpeg shared libraries (4 to 8): "
            "install them (e.g. apt-get install ffmpeg, or conda install ffmpeg), or use data.decoder=pyav"
        )
    from torchcodec.decoders import VideoDecoder

    def open_video(path: Path) -> VideoDecoder:
        return VideoDecoder(str(path), seek_mode="exact", dimension_order="NHWC")

    def frame_rate(path: Path) -> float:  # the header's, as PyAV's average_rate (WebM: not the timestamps' 12.0012)
        metadata = VideoDecoder(str(path), seek_mode="approximate").metadata
        return float(metadata.average_fps_from_header or metadata.average_fps or 0)

    def decode(path: Path, indices: list[int]) -> np.ndarray:
        count = frame_index(path).count  # kept per process; names a file cut short, as for PyAV
        if max(indices) >= count:
            raise VideoDecodeError(path, f"no frame at index {max(indices)} (the video has {count})")
        return open_video(path).get_frames_at(indices).data.numpy()  # (T, H, W, 3) uint8

    return Decoder(
        count_frames=lambda path: frame_index(path).count,
        frame_rate=frame_rate,
        decode_frames=decode,
    )


# ---------------------------------------------------------------------------------------------- JPEG frames

_FRAME_NAME = re.compile(r"(.*?)(\d+)(\.jpe?g)", re.IGNORECASE)  # prefix, frame number, suffix


@functools.lru_cache(maxsize=4096)
def _frame_names(folder: Path) -> tuple[str, int]:
    """The name format of the frames in ``folder`` (e.g. ``frame_{:010d}.jpg``) and their count, from
    one listing; kept per process, since a folder can hold 100,000 frames."""
    groups: dict[tuple[str, str], list[str]] = {}
    for entry in os.scandir(folder):
        if match := _FRAME_NAME.fullmatch(entry.name):
            prefix, digits, suffix = match.groups()
            groups.setdefault((prefix, suffix), []).append(digits)
    if len(groups) != 1:
        found = f"{len(groups)} kinds, {sorted(p + '<n>' + s for p, s in groups)}" if groups else "none"
        raise VideoDecodeError(folder, f"a frame folder must hold <prefix><n>.jpg frames of one kind, found {found}")
    (((prefix, suffix), numbers),) = groups.items()
    width = len(min(numbers, key=int))  # 10 for frame_0000000001.jpg; 1 when unpadded
    return f"{prefix}{{:0{width}d}}{suffix}", len(numbers)


def _decode_jpegs(folder: Path, indices: list[int]) -> np.ndarray:
    name, _ = _frame_names(folder)
    frames = {}
    for index in set(indices):
        file = folder / name.format(index + 1)
        try:
            frames[index] = decode_jpeg(read_file(str(file)), mode=ImageReadMode.RGB)  # (3, H, W) uint8
        except Exception as error:
            raise VideoDecodeError(folder, f"frame {index}, {file}: {type(error).__name__}: {error}") from error
    return torch.stack([frames[i] for i in indices]).permute(0, 2, 3, 1).numpy()


# A folder of a video's frames, one JPEG each, numbered from 1 as ffmpeg writes them: EPIC-KITCHENS'
# frame_0000000001.jpg, or <video id>_000001.jpg as SlowFast extracts them. Frame i is file number i + 1,
# and only the files of the wanted frames are read. The frames are counted by listing the folder.
FRAME_FOLDER = Decoder(lambda folder: _frame_names(folder)[1], None, _decode_jpegs)

# data.decoder -> its backend for video files, built on first use (torchcodec is an optional package).
DECODERS: dict[str, Callable[[], Decoder]] = {
    "pyav": lambda: Decoder(lambda path: frame_index(path).count, _pyav_frame_rate, _pyav_decode_frames),
    "torchcodec": functools.cache(_torchcodec_decoder),
}
