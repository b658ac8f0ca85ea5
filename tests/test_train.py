"""End to end through vivit.pipeline: every variant trains, checkpoints evaluate, the model learns, and a run's
console shows each line once, without noise."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch

from helpers import TINY_DATA, TINY_NET, compose_config, run_script
from vivit.pipeline import CONFIG_KEY, build, evaluate, train
from vivit.report import RESULTS_FILE


@pytest.mark.parametrize(
    "model", ["spatiotemporal", "factorised_encoder", "factorised_self_attention", "factorised_dot_product"]
)
@pytest.mark.parametrize("tokeniser", ["uniform_frame", "tubelet"])
def test_fast_dev_run_every_variant(model: str, tokeniser: str, tiny_cfg) -> None:
    metrics = train(tiny_cfg(f"model={model}", f"tokeniser={tokeniser}", "debug=fdr"))
    assert {"train/loss", "val/acc_top1", "test/acc_top1"} <= metrics.keys()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_two_heads_report_verb_noun_and_action(tiny_cfg) -> None:
    metrics = train(tiny_cfg("data=moving_digits_action", "debug=fdr"))
    assert {"val/verb_acc_top1", "val/noun_acc_top1", "val/acc_top1", "test/acc_top1"} <= metrics.keys()
    # a clip's action is right only when both heads are: never more often than either head
    assert metrics["test/acc_top1"] <= min(metrics["test/verb_acc_top1"], metrics["test/noun_acc_top1"])


def test_init_from_image_vit_checkpoint(tiny_cfg, tmp_path: Path) -> None:
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2)  # TINY_NET's sizes
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    init = ["init=image_vit", f"init.source={tmp_path / 'vit.pth'}", "init.mean=[0.1,0.2,0.3]"]
    cfg = tiny_cfg(*init, "init.std=[0.4,0.5,0.6]", "debug=limit", "trainer.max_epochs=1")
    train(cfg)
    report = json.loads((tmp_path / "init_report.json").read_text())
    assert report["mean"] == [0.1, 0.2, 0.3]
    checkpoint = torch.load(next((tmp_path / "checkpoints").glob("*.ckpt")), weights_only=True)
    assert checkpoint[CONFIG_KEY]["data"]["std"] == [0.4, 0.5, 0.6]  # evaluation normalises as training did
    assert report["transformed"]["tokeniser.proj.weight"].startswith("central_frame")
    assert {"head.weight", "head.bias"} <= set(report["fresh"])


def test_checkpoint_carries_config_and_evaluates(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg("debug=limit", "logger=csv", "trainer.max_epochs=1")
    metrics = train(cfg)
    ckpts = sorted((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    assert ckpts, "no checkpoint written"
    checkpoint = torch.load(ckpts[-1], map_location="cpu", weights_only=True)
    assert checkpoint[CONFIG_KEY]["model"]["net"]["_target_"] == "vivit.models.FactorisedEncoder"

    eval_cfg = compose_config("eval", [f"ckpt_path={ckpts[-1]}", "trainer.limit_test_batches=2"], tmp_path / "eval")
    eval_metrics = evaluate(eval_cfg)
    # same weights, same test clips (centre clip, centre crop): the same numbers
    assert eval_metrics["test/acc_top1"] == pytest.approx(metrics["test/acc_top1"])
    assert eval_metrics["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-5)
    assert eval_metrics["test/videos"] == eval_metrics["test/views"] == 16  # two batches of 8

    views = ["data.test_clips=2", "data.test_crops=3", "model.view_average=softmax"]
    multiview = evaluate(compose_config("eval", [f"ckpt_path={ckpts[-1]}", *views], tmp_path / "multiview"))
    assert multiview["test/videos"] == 24 and multiview["test/views"] == 24 * 6  # the whole tiny test split
    assert 0 <= multiview["test/acc_top1"] <= 1 and multiview["test/loss"] > 0
    # each evaluation's results.json (for src/report.py over evaluations) is in its own directory, not the run's
    results = {d: json.loads((tmp_path / d / RESULTS_FILE).read_text()) for d in ("", "eval", "multiview")}
    assert [results[d]["test/views"] for d in ("", "eval", "multiview")] == [16, 16, 144]
    assert results["multiview"]["gmacs"] == results[""]["gmacs"] > 0


@pytest.mark.slow  # two spawned processes: about a minute on 2 cores
def test_multiview_test_is_exact_under_ddp(tiny_cfg, tmp_path: Path) -> None:
    """Two processes score the same videos as one: each counted once, although 5 videos do not split evenly."""
    import lightning as L

    odd = [f"data.root={tmp_path / 'odd'}", "data.generate.num_train=2", "data.generate.num_val=5"]
    cfg = tiny_cfg(*odd, "data.test_clips=2", "data.test_crops=3", "data.batch_size=4")
    datamodule, model = build(cfg)
    datamodule.prepare_data()
    results = []
    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        quiet = dict(logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
        trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, **quiet)
        trainer.test(model, datamodule=datamodule, verbose=False)
        results.append({k: float(v) for k, v in trainer.callback_metrics.items()})
    single, ddp = results
    assert single["test/videos"] == ddp["test/videos"] == 5 and single["test/views"] == ddp["test/views"] == 30
    assert ddp == pytest.approx(single, rel=1e-5)


def test_eval_rejects_missing_checkpoint(tmp_path: Path) -> None:
    cfg = compose_config("eval", [f"ckpt_path={tmp_path / 'none.ckpt'}"], tmp_path)
    with pytest.raises(FileNotFoundError, match="none.ckpt"):
        evaluate(cfg)


def test_learns_motion_on_builtin_data(tmp_path: Path) -> None:
    """A short run of the default model on a small built-in dataset clearly beats chance (1/6)."""
    cfg = compose_config(
        overrides=[
            "data.generate.num_train=640",
            "data.generate.num_val=96",
            f"paths.data_dir={tmp_path / 'data'}",
            "trainer.max_epochs=9",
            "data.num_workers=0",
            "test=false",
            "callbacks=none",
        ],
        output_dir=tmp_path,
    )
    metrics = train(cfg)
    assert metrics["val/acc_top1"] > 0.5, metrics


NOISE = {  # what a run's console must not show: each needs no action, or is Lightning asking what it can know
    "tip": "💡 Tip",  # litlogger, litmodels
    "weights_only": "`weights_only` was not set",  # at every step checkpoint: sounds like an unsafe load
    "summary callbacks": "Trainer already configured with model summary callbacks",
    "batch size": "Trying to infer the `batch_size`",
    "FLOPs": "FLOPs",  # the model summary's column and total, all zeros
    "Flops": "Total Flops",
    "eval callbacks": "callbacks used to create the checkpoint need to be provided",
    "eval dirpath": "The dirpath has changed",
    "LeafSpec": "LeafSpec",  # torch's deprecation, inside Lightning
    "W&B anonymous": "The anonymous setting has no effect",
    "ANSI": "\x1b[1",  # W&B's colours (progress bars' cursor moves aside)
    "srun": "The `srun` command is available",  # where SLURM is installed: a hint for SLURM jobs, and this is none
}


def test_a_run_and_its_evaluation_log_and_warn_nothing_needless(tiny_cfg, tmp_path: Path, caplog, recwarn) -> None:
    """In process (the console's duplicates and W&B: the test below): none of the noise, a step checkpoint too."""
    caplog.set_level(logging.INFO)
    train(tiny_cfg("debug=limit", "trainer.max_epochs=1", "callbacks.fault_tolerance.every_n_train_steps=2"))
    (checkpoint,) = (tmp_path / "checkpoints").glob("epoch_*.ckpt")
    evaluate(compose_config("eval", [f"ckpt_path={checkpoint}"], tmp_path / "eval"))
    said = [record.getMessage() for record in caplog.records] + [str(warning.message) for warning in recwarn]
    assert any(message.startswith("step 2: saved") for message in said)
    # the warnings that vivit.console filters out reach pytest, which resets the filters
    noise = {name: text for name, text in NOISE.items() if name not in ("LeafSpec", "srun")}
    found = {name: message for message in said for name, text in noise.items() if text in message}
    assert not found, f"{sorted(found)}: {found}"


def test_a_run_prints_its_config_as_a_folded_tree(tmp_path: Path, caplog) -> None:
    """At its start a run logs its config as a tree (console and log file): one line per config group, in the
    defaults' order, with the option chosen and the keys that the command line sets under it, then the top-level
    values. The whole config, resolved, goes to config_tree.log."""
    from vivit.console import print_config

    caplog.set_level(logging.INFO)
    cfg = compose_config(overrides=[*TINY_NET, "model=spatiotemporal", "model.optimizer.lr=0.1"], output_dir=tmp_path)
    print_config(cfg, tmp_path)
    (tree,) = [r.getMessage().splitlines() for r in caplog.records if r.getMessage().startswith("config (")]
    assert tree[0] == f"config (all of it: {tmp_path}/.hydra/config.yaml; resolved: {tmp_path}/config_tree.log)"
    assert [line[4:].split(":")[0] for line in tree[1:5]] == ["data", "model", "tokeniser", "backbone"]
    assert "├── model: spatiotemporal optimizer.lr=0.1" in tree
    assert "├── backbone: micro embed_dim=32 depth=1 num_heads=2 patch_size=16" in tree
    last = "task_name=train tags=[] seed=42 train=True test=True ckpt_path=None resume=None"
    last += " optimized_metric=val/acc_top1"
    assert tree[-1] == f"└── {last}"
    full = (tmp_path / "config_tree.log").read_text()
    assert "num_classes: 6" in full and "${" not in full  # resolved


def console(script: str, *args: str) -> list[str]:
    """The console lines of ``python src/<script>.py *args`` (which must succeed), W&B not silenced."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}
    proc = run_script(script, *args, env=env, merge_output=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout.splitlines()


def assert_quiet(lines: list[str]) -> None:
    """No noise, and no message twice (Lightning's lines came plain and again through Hydra's logger)."""
    found = {name: line for line in lines for name, text in NOISE.items() if text in line}
    assert not found, f"{sorted(found)}: {found}"
    messages = [re.sub(r"^(\[[^]]*\]){3} - |^(INFO|WARNING): ", "", line) for line in lines]
    messages = [m for m in messages if re.search(r"\w", m)]  # not the model summary's rules
    assert len(messages) == len(set(messages)), [m for m in messages if messages.count(m) > 1]


@pytest.mark.slow  # two entry points in subprocesses: about a minute on 2 cores
def test_a_run_and_its_evaluation_print_each_line_once_without_noise(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = [*TINY_DATA, *TINY_NET, f"paths.data_dir={data_dir}", f"hydra.run.dir={run}", "debug=limit"]
    overrides += ["trainer.max_epochs=1", "callbacks.fault_tolerance.every_n_train_steps=2"]  # a checkpoint: step 2/4
    lines = console("train", *overrides, "callbacks.progress_bar.refresh_rate=0", "logger=wandb")
    assert_quiet(lines)
    text = "\n".join(lines)
    assert f"config (all of it: {run / '.hydra' / 'config.yaml'}; resolved: {run / 'config_tree.log'})" in text
    assert "├── model: factorised_encoder" in lines  # the config in brief: test_a_run_prints_its_config_...
    assert "step 2: saved" in text and (run / "wandb").is_dir()
    table = lines.index(next(line for line in lines if line.strip().startswith("| Name")))
    assert lines[table].split() == ["|", "Name", "|", "Type", "|", "Params", "|", "Mode"]  # no FLOPs column
    assert lines[table + 2].split()[:4] == ["0", "|", "net", "|"]  # the network's layers, not the metrics'
    assert not any("_metrics" in line for line in lines[table : table + 12])
    summary = lines[lines.index("Summary") :]
    assert [line.split(":")[0].strip() for line in summary[-3:]] == ["checkpoint", "config", "logs"]
    assert sum("test/acc_top1" in line for line in lines) == 1  # once, in the summary (no Lightning table too)
    assert "\x1b" not in (run / "train.log").read_text()

    (checkpoint,) = (run / "checkpoints").glob("epoch_*.ckpt")
    lines = console("eval", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert_quiet(lines)
    assert "Summary" in lines and f"  checkpoint: {checkpoint}" in lines
