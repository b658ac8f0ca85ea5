"""What the tests share: the toy sizes, the real configs composed as the entry points compose them, the entry
points run as a user types them, files that cannot be decoded, and callbacks that tests add to real runs.

Fixtures and pytest hooks are in conftest.py; this module is imported by name (``from helpers import ...``), and
by runs started with :func:`run_script` (``+callbacks.<name>._target_=helpers.PauseAt``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from torchvision.io import encode_jpeg, write_file

import vivit.config  # noqa: F401  (conf/'s resolvers and schemas, registered as the entry points register them)
from vivit.data.decoding import get_decoder
from vivit.data.moving_digits import write_video

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

# A tiny built-in dataset (generated once per session by conftest's data_dir fixture) and a toy-sized network.
TINY_DATA = [
    "data.generate.num_train=48",
    "data.generate.num_val=24",
    "data.generate.num_frames=8",
    "data.num_frames=4",
    "data.stride=2",
    "data.batch_size=8",
    "data.num_workers=0",
]
TINY_NET = ["backbone.embed_dim=32", "backbone.depth=1", "backbone.num_heads=2", "backbone.patch_size=16"]


# ---------------------------------------------------------------------------------------------- configs


def compose_config(name: str = "train", overrides: Sequence[str] = (), output_dir: Path | None = None) -> DictConfig:
    """Compose conf/<name>.yaml as `python src/<name>.py` would, with paths under output_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.root_dir = str(ROOT)
            cfg.paths.output_dir = str(output_dir)
            cfg.paths.log_dir = str(output_dir / "logs")
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.runtime.cwd = str(ROOT)
        HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in @hydra.main, the run config does not hold the hydra node
    return cfg


def write_checkpoint(cfg: DictConfig, path: Path) -> Path:
    """A Lightning-style checkpoint of an untrained model: its state dict and the resolved run config."""
    from vivit.pipeline import CONFIG_KEY

    model = instantiate(cfg.model)
    torch.save({"state_dict": model.state_dict(), CONFIG_KEY: OmegaConf.to_container(cfg, resolve=True)}, path)
    return path


# ---------------------------------------------------------------------------------------------- entry points


def _command(script: str, args: Sequence[str], python: Sequence[str]) -> list[str]:
    return [sys.executable, *python, str(ROOT / "src" / f"{script}.py"), *args]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    """``env`` (by default this process's) with tests/ on PYTHONPATH, for the callbacks below."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    return env


def run_script(
    script: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 600,
    python: Sequence[str] = (),
    merge_output: bool = False,
) -> subprocess.CompletedProcess:
    """``python src/<script>.py args...``, as a user types it in ``cwd``, until it exits. Its output is captured
    as text: stdout and stderr, or with ``merge_output`` both in stdout, in the order written. ``env`` is the
    environment (by default this process's); ``python`` holds interpreter options, such as ``("-X", "importtime")``."""
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT if merge_output else subprocess.PIPE}
    return subprocess.run(_command(script, args, python), cwd=cwd, env=_env(env), timeout=timeout, text=True, **output)


def start_script(script: str, *args: str, output=subprocess.PIPE) -> subprocess.Popen:
    """``python src/<script>.py args...`` started in the repository root and left running, for tests that
    signal or race runs. Its stdout and stderr both go to ``output`` (a pipe, or an open file)."""
    return subprocess.Popen(
        _command(script, args, ()), cwd=ROOT, env=_env(None), stdout=output, stderr=subprocess.STDOUT
    )


# ---------------------------------------------------------------------------------------------- videos


def torchcodec_usable() -> bool:
    """Whether ``data.decoder=torchcodec`` works here: the package, built for this torch, and FFmpeg's libraries."""
    try:
        get_decoder("torchcodec")
    except ImportError:
        return False
    return True


NEEDS_TORCHCODEC = pytest.mark.skipif(
    not torchcodec_usable(), reason="torchcodec (with FFmpeg's shared libraries) is not importable"
)
# data.decoder's video backends, torchcodec's tests skipped where it cannot run (CI: it is an optional package)
VIDEO_DECODERS = ["pyav", pytest.param("torchcodec", marks=NEEDS_TORCHCODEC)]


RAMP_FRAMES = 40  # the length of ramp(): grey levels 4, 10, ..., 238


def ramp(num_frames: int = RAMP_FRAMES) -> np.ndarray:
    """``(T, 32, 32, 3)`` uint8 frames whose frame i shows the grey level ``4 + 6 i`` (dataset_formats.md §8), so
    that a clip tells which frames were read."""
    return np.stack([np.full((32, 32, 3), 4 + 6 * i, dtype=np.uint8) for i in range(num_frames)])


def assert_same_encoding(a: np.ndarray, b: np.ndarray) -> None:
    """Two decodings of videos encoded from the same frames. libx264 through PyAV is not always byte-identical
    from run to run here (rarely, since vivit.data.moving_digits._yuv420p): the frames agree to 1-2 grey levels
    on average. The generated frames themselves are compared exactly where they are made."""
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b).mean() < 3


def write_frame_folder(folder: Path, frames: np.ndarray, name: str = "frame_{:010d}.jpg") -> None:
    """One JPEG per frame, numbered from 1, as EPIC-KITCHENS' rgb_frames."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(frames, start=1):
        write_file(str(folder / name.format(number)), encode_jpeg(torch.from_numpy(frame).permute(2, 0, 1), quality=95))


def write_bad_video(path: Path, kind: str, good: Path) -> None:
    """A video file that cannot be decoded: ``truncated`` (a third of ``good``), ``empty`` (zero bytes),
    ``random`` (noise), ``no_video`` (an MP4 with only an audio stream) or ``no_frames`` (a video stream
    without a single packet: give ``path`` an .avi suffix, since an MP4 drops such a stream)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "no_frames":
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=12)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            container.start_encoding()  # writes the header
        return
    if kind == "no_video":
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=8000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
        return
    content = {"truncated": lambda: good.read_bytes()[: good.stat().st_size // 3], "empty": lambda: b""}
    content["random"] = lambda: np.random.default_rng(0).bytes(4096)
    path.write_bytes(content[kind]())


def write_cut_video(path: Path, keep: int | float, noise: bool = False) -> None:
    """A 3 s, 36-frame video at 12 fps cut to its first ``keep`` bytes (an int) or fraction of them (a float), as
    an interrupted download leaves it: its header still declares 3 s. Its frames are a grey ramp, or noise (whose
    bytes grow with the frames: the first 1,024 bytes then hold no whole frame)."""
    rng = np.random.default_rng(0)
    ramp = np.arange(36, dtype=np.uint8)[:, None, None, None] * 7
    frames = rng.integers(0, 256, (36, 32, 32, 3), dtype=np.uint8) if noise else np.broadcast_to(ramp, (36, 32, 32, 3))
    write_video(path, np.ascontiguousarray(frames), 12)
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])


VFR_TIMES_MS = (0, 33, 66, 200, 233, 266, 800, 833, 866, 900, 1500, 1533, 1566, 1600, 1633, 1666, 1700, 2500, 2533)


def write_vfr_video(path: Path, times_ms: Sequence[int] = VFR_TIMES_MS, last_ms: int | None = None) -> None:
    """A variable-frame-rate video, as phones and screen recorders write them: frame i (grey level 10 i) shown at
    ``times_ms[i]``, with pauses of up to 0.8 s between frames, and the last one for ``last_ms`` (None: the
    encoder's one frame); H.264 in MP4 or MKV, VP9 in WebM."""
    codec = "libvpx-vp9" if path.suffix == ".webm" else "libx264"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        packets = []
        for i, time_ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = time_ms, Fraction(1, 1000)
            packets += stream.encode(frame)
        packets += stream.encode()
        if last_ms is not None:
            max(packets, key=lambda packet: packet.pts).duration = last_ms
        for packet in packets:
            container.mux(packet)


# ---------------------------------------------------------------------------------------------- callbacks


class AtStep(Callback):
    """Calls ``act(trainer, batch)`` at the start of training step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.act(trainer, batch)

    def act(self, trainer, batch) -> None:
        raise NotImplementedError


class PauseAt(AtStep):
    """At the start of training step ``step``, writes ``marker`` and waits (at most a minute) for a signal, so
    that a test can interrupt the run at a known point. Only once: not in a process started after ``marker``
    was written (a re-run; the processes of one DDP run all pause). With ``job``, only in that job of a
    multirun."""

    def __init__(self, step: int, marker: str, job: int | None = None) -> None:
        super().__init__(step)
        self.marker, self.job = Path(marker), job
        self.paused = self.marker.exists()

    def act(self, trainer, batch) -> None:
        if self.paused or (self.job is not None and HydraConfig.get().job.num != self.job):
            return
        self.paused = True
        self.marker.write_text("paused")
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)


class PoisonBatch(AtStep):
    """Turns the clips of training step ``step`` into NaN, so that its loss is not finite."""

    def act(self, trainer, batch) -> None:
        batch["video"].fill_(float("nan"))


class CrashAt(AtStep):
    """Raises at the start of training step ``step``, as a crash would."""

    def act(self, trainer, batch) -> None:
        raise RuntimeError(f"crashed at step {self.step}")
