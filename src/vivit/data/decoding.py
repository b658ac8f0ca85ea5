"""Decode just the frames a clip needs from an encoded video file with PyAV."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# Beyond this frame index, seek to the nearest keyframe instead of decoding from the start
# (EPIC-KITCHENS segments can start tens of thousands of frames into a video).
SEEK_THRESHOLD = 300


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


def count_frames(path: str | Path) -> int:
    """Number of frames in the file's video stream, counted by demuxing (no decoding).

    Counts the packets the decoder would turn into frames; container metadata (``stream.frames``) is
    absent from WebM and not trusted elsewhere.
    """
    with _unusable_as_decode_error(path), av.open(str(path)) as container:
        stream = _video_stream(container, path)
        count = sum(1 for packet in container.demux(stream) if packet.size and not packet.is_discard)
    if count == 0:
        raise VideoDecodeError(path, "the video stream has no frames")
    return count


def decode_frames(path: str | Path, indices: Sequence[int]) -> np.ndarray:
    """Frames at 0-based ``indices`` (may repeat, any order) as uint8 RGB ``(T, H, W, 3)``, T = len(indices).

    Decoding stops at the largest index. Far into a file it seeks first, and falls back to decoding from
    the start if the frame positions after the seek cannot be trusted.
    """
    if len(indices) == 0 or min(indices) < 0:
        raise ValueError(f"indices must be a non-empty sequence of frame positions >= 0, got {list(indices)}")
    wanted = set(indices)
    with _unusable_as_decode_error(path):
        # `with` closes the container even on error: an open one can deadlock forked DataLoader workers.
        frames = None
        if min(wanted) >= SEEK_THRESHOLD:
            with av.open(str(path)) as container:
                frames = _decode_after_seek(_video_stream(container, path), wanted)
        if frames is None:
            with av.open(str(path)) as container:
                frames = _decode_from_start(_video_stream(container, path), wanted)
    if len(frames) < len(wanted):
        raise VideoDecodeError(path, f"no frame at index {max(wanted - frames.keys())}")
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


def _decode_after_seek(stream: av.VideoStream, wanted: set[int]) -> dict[int, np.ndarray] | None:
    """Seek to the keyframe before the first wanted frame; frame positions come from timestamps.

    Assumes a constant frame rate. Returns None (decode from the start instead) when timestamps are
    missing or the seek landed after the first wanted frame.
    """
    rate, base = stream.average_rate, stream.time_base
    if not rate or not base:
        return None
    origin = stream.start_time or 0
    first, last = min(wanted), max(wanted)
    stream.container.seek(origin + int((first - 0.5) / rate / base), stream=stream, backward=True, any_frame=False)
    frames: dict[int, np.ndarray] = {}
    rgb = VideoReformatter()
    for frame in stream.container.decode(stream):
        if frame.pts is None:
            return None
        position = round(float((frame.pts - origin) * base * rate))
        if first not in frames and position > first:
            return None
        if position in wanted:
            frames[position] = rgb.reformat(frame, format="rgb24").to_ndarray()
        if position >= last:
            break
    return frames
