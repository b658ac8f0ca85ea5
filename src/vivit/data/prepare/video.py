"""One video prepared: re-encoded small and easy to seek (``format=video``), or written as a folder of JPEG frames
(``format=jpeg``), then verified, as the loader will read it. Imports only PyAV at the top."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.video.reformatter import VideoReformatter

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}  # any other suffix (.webm, .mkv, .avi): Matroska
FRAME_NAME = "frame_{:010d}.jpg"  # EPIC-KITCHENS' names, numbered from 1
FRAME_CHUNK = 64  # frames of a source folder decoded at once
PARTIAL = ".partial"  # an output being written: .<name>.partial, renamed when verified


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


def reencode(source: Path, output: Path, **options) -> PreparedVideo:
    """Prepares one video as ``src/prepare_data.py`` does; ``options`` are fields of :class:`Encoding`, e.g.
    ``short_side=256``. Raises a ``VideoDecodeError`` when the source cannot be prepared."""
    from vivit.data.decoding import VideoDecodeError

    result = prepare_video(Path(source), Path(output), Encoding(**options))
    if result.status == "failed":
        raise VideoDecodeError(source, result.error)
    return result


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


def target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled down to ``short_side`` (never up) and the long side in
    proportion, each rounded down to an even number (yuv420p): the aspect ratio is kept to within 2 pixels."""
    short = min(width, height)
    scale = min(short, short_side) / short
    return tuple(max(2, 2 * int(side * scale / 2 + 1e-6)) for side in (width, height))  # type: ignore[return-value]


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
