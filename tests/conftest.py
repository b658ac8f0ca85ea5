"""Fixtures (the real configs shrunk to toy size, a tiny built-in dataset) and hooks; what the tests share
besides is in helpers.py."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before timm / huggingface_hub are imported
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from helpers import TINY_DATA, TINY_NET, compose_config  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped where no GPU is visible (they run on the device machine)."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="needs a GPU"))


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
