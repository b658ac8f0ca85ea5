"""Every config option composes and instantiates; invalid combinations fail before training."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from conftest import CONF, ROOT, compose_config
from vivit.config import check_override_types, short_name
from vivit.pipeline import build, instantiate_callbacks, instantiate_loggers

GROUPS = [
    "data",
    "model",
    "tokeniser",
    "backbone",
    "init",
    "optimizer",
    "scheduler",
    "regularisation",
    "trainer",
    "callbacks",
    "logger",
    "experiment",
    "debug",
    "input_encoding",
    "sweep",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml") if not p.stem.startswith("_"))


def instantiate_all(cfg) -> None:
    """Everything src/train.py builds before fitting; large networks go on the meta device."""
    with torch.device("meta"):
        datamodule, model = build(cfg)
    assert model.net.num_classes == cfg.data.num_classes
    optimizer = instantiate(cfg.model.optimizer)(model.parameters())
    if cfg.model.get("scheduler"):
        instantiate(cfg.model.scheduler)(optimizer, total_steps=10, steps_per_epoch=2)
    if "_target_" in cfg.init:
        assert callable(instantiate(cfg.init))  # applied to a real network in test_train
    callbacks = instantiate_callbacks(cfg.callbacks)
    instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate_loggers(cfg.logger) or False)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(group: str, option: str, data_dir: Path, tmp_path: Path) -> None:
    overrides = [f"{group}={option}", f"paths.data_dir={data_dir}"]
    if group == "trainer" and option in ("gpu", "ddp"):
        overrides.append("trainer.accelerator=cpu")  # composes the GPU options on this CPU machine
        overrides.append("trainer.precision=bf16-mixed")
    if group == "init" and option != "scratch":
        overrides.append("init.source=vit.pth")
    if group == "input_encoding":
        overrides += ["init=image_vit", "init.source=vit.pth"]
    if group == "data" and not option.startswith("moving_digits"):
        overrides.append(f"data.root={tmp_path}")  # a real dataset: construction only checks that the root exists
        if option == "video_csv":
            overrides.append("data.heads.label=5")  # the custom dataset's class count is the user's
    if group == "backbone" and option == "h":
        overrides.append("data.crop_size=28")  # ViT-H/14: the crop must be a multiple of 14
    cfg = compose_config(overrides=overrides, output_dir=tmp_path)
    assert HydraConfig.get().runtime.choices[group] == option
    instantiate_all(cfg)


@pytest.mark.parametrize(
    ("model", "tokeniser"),
    list(itertools.product(options("model"), options("tokeniser"))),
)
def test_model_x_tokeniser(model: str, tokeniser: str, tiny_cfg) -> None:
    cfg = tiny_cfg(f"model={model}", f"tokeniser={tokeniser}")
    _, module = build(cfg)
    video = torch.randn(2, 3, cfg.data.num_frames, cfg.data.crop_size, cfg.data.crop_size)
    assert module(video).shape == (2, cfg.data.num_classes)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=factorised_self_attention", "model.net.pool=cls"], "set model.net.pool=mean"),
        (["model=factorised_dot_product", "model.net.pool=cls"], "set model.net.pool=mean"),
        (["model=factorised_dot_product", "backbone.num_heads=3", "backbone.embed_dim=48"], "num_heads must be even"),
        (["data.num_frames=15"], r"frames \(15\) is not divisible"),
        (["data.crop_size=30"], r"height \(30\) is not divisible"),
        (["data.root=/no/such/dir", "data.generate=null"], "data.root"),
        (["data=moving_digits_action", "data.num_classes=6"], "num_classes"),
        (["model.net.num_classes=7"], "num_classes"),
    ],
)
def test_invalid_combinations_fail_at_construction(overrides: list[str], message: str, tiny_cfg) -> None:
    cfg = tiny_cfg(*overrides)
    with pytest.raises(Exception, match=message):
        build(cfg)


def test_unknown_key_fails_at_compose(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="tempral_depth"):
        compose_config(overrides=["model.net.tempral_depth=2"], output_dir=tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.max_epoch=3"], "max_epoch"),  # an unknown key (a typo): Hydra, as it composes
        (["data.batch_size=sixteen"], "data.batch_size='sixteen': expected a number"),
        (["model=factorised_self_attention", "model.net.pool=cls"], "set model.net.pool=mean"),
        (["model=factorised_dot_product", "backbone.num_heads=3", "backbone.embed_dim=48"], "num_heads must be even"),
        (["data.num_frames=15"], "frames (15) is not divisible"),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path='/no/such.ckpt' is not a file"),
    ],
)
def test_config_errors_fail_before_torch_is_imported(overrides: list[str], message: str, tmp_path: Path) -> None:
    """src/train.py runs the checks that need no torch before it imports torch: a mistake in the command
    fails at once (Hydra's start, not seconds of imports), naming the key or the combination."""
    assert_fails_before_torch("train", overrides, message, tmp_path)


@pytest.mark.parametrize("script", ["eval", "predict", "export"])
def test_other_entry_points_check_before_torch_is_imported(script: str, tmp_path: Path) -> None:
    assert_fails_before_torch(script, ["ckpt_path=/no/such.ckpt"], "ckpt_path='/no/such.ckpt' is not a file", tmp_path)
    assert_fails_before_torch(script, ["seed=one"], "seed='one': expected a number, like its default 42", tmp_path)


def assert_fails_before_torch(script: str, overrides: list[str], message: str, tmp_path: Path) -> None:
    args = [str(ROOT / "src" / f"{script}.py"), *overrides, f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert imported and not imported & {"torch", "lightning", "timm"}


def test_sweep_job_names_are_one_short_stable_directory_each() -> None:
    """A job directory is named by its overrides: a path in a value must not nest it, a long one is cut with a
    hash of the whole, and different overrides keep different names."""
    assert short_name("model=spatiotemporal,seed=1") == "model=spatiotemporal,seed=1"
    names = [short_name(n) for n in ("ckpt=/a/b.ckpt", "ckpt=/a_b.ckpt", "x=" + "1" * 300, "x=" + "1" * 299 + "2")]
    assert all("/" not in n and len(n) <= 120 for n in names)
    assert len(set(names)) == len(names)
    assert names[0] == short_name("ckpt=/a/b.ckpt")  # stable across re-runs


@pytest.mark.parametrize(
    ("override", "default"),
    [
        ("data.batch_size=sixteen", "16"),
        ("model.optimizer.lr=fast", "0.001"),
        ("model.net.embed_dim=big", "96"),  # ${backbone.embed_dim}, followed
        ("trainer.deterministic=maybe", "False"),
    ],
)
def test_wrong_type_is_found_in_the_config_files(override: str, default: str, tmp_path: Path) -> None:
    """The type check reads a key's default from the files the run was composed from, without composing
    again (Hydra is not even initialised here); text that a key takes passes."""
    key = override.split("=")[0]
    cfg = compose_config(overrides=[override], output_dir=tmp_path)
    with pytest.raises(ValueError, match=f"{key}='.*': expected .*, like its default {default}$"):
        check_override_types(cfg)
    check_override_types(
        compose_config(overrides=["data.root=/videos", "trainer.precision=bf16-mixed"], output_dir=tmp_path)
    )
