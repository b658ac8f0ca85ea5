"""Shared fixtures: the real configs, composed and shrunk to toy size, and a tiny built-in dataset."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before timm / huggingface_hub are imported
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from pathlib import Path  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

# A tiny built-in dataset (generated once per session) and a toy-sized network.
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


def compose_config(name: str = "train", overrides: list[str] = (), output_dir: Path | None = None) -> DictConfig:
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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the tiny built-in dataset, generated once per session."""
    path = tmp_path_factory.mktemp("data")
    cfg = compose_config(overrides=TINY_DATA, output_dir=path)
    instantiate(cfg.data.generate)(path / "moving_digits")
    return path


@pytest.fixture
def tiny_cfg(data_dir: Path, tmp_path: Path):
    """Factory: the real train config with extra overrides, on tiny data and a tiny network."""

    def make(*overrides: str, name: str = "train") -> DictConfig:
        return compose_config(name, [*TINY_DATA, *TINY_NET, f"paths.data_dir={data_dir}", *overrides], tmp_path)

    return make


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
