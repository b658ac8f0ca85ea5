"""Every config option composes and instantiates; invalid combinations fail before training."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

import vivit.schemas
from helpers import CONF, ROOT, compose_config, run_script
from test_datasets import FIXTURES
from vivit.config import check_command_line, short_name
from vivit.pipeline import build
from vivit.trainer import instantiate_callbacks, instantiate_loggers

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


# The node that each option of a typed group fills, and the schema (vivit.schemas) that its yaml extends.
SCHEMA_NODES = {
    "data": ("data", "DataSchema"),
    "trainer": ("trainer", "TrainerSchema"),
    "optimizer": ("model.optimizer", "OptimizerSchema"),
    "scheduler": ("model.scheduler", "SchedulerSchema"),
    "regularisation": ("regularisation", "RegularisationSchema"),
    "backbone": ("backbone", "BackboneSchema"),
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml"))


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
    if group == "data" and not option.startswith(("moving_digits", "ucf101", "hmdb51")):  # construction reads its
        config = option.replace("600", "400").replace("700", "400")  # class table, so give it a tiny copy
        next(write for write, data in FIXTURES.values() if data == config)(tmp_path / "root")
        overrides.append(f"data.root={tmp_path / 'root'}")
    if group == "backbone" and option == "h":
        overrides.append("data.crop_size=28")  # ViT-H/14: the crop must be a multiple of 14
    if group in ("data", "experiment", "sweep") and (dataset := option.split("_")[0]) in ("ucf101", "hmdb51"):
        import test_ucf_hmdb  # experiment=ucf101_finetune, sweep=ucf101_splits, ...: a tiny copy of the dataset

        getattr(test_ucf_hmdb, f"write_{dataset}")(tmp_path / "root")
        classes = len(test_ucf_hmdb.EXPECTED[dataset][0])
        overrides += [f"data.root={tmp_path / 'root'}", f"data.heads.label={classes}", f"data.num_classes={classes}"]
        if group == "experiment":  # the released ViViT to fine-tune; its GPU trainer composed on this CPU machine
            overrides += ["init.source=vivit", "trainer.accelerator=cpu"]
    cfg = compose_config(overrides=overrides, output_dir=tmp_path)
    assert HydraConfig.get().runtime.choices[group] == option
    if group in SCHEMA_NODES and (node := OmegaConf.select(cfg, SCHEMA_NODES[group][0])) is not None:
        assert issubclass(OmegaConf.get_type(node), getattr(vivit.schemas, SCHEMA_NODES[group][1]))
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


# Mistakes in a command line that Hydra composes without complaint, or would take with a "+": each is answered
# before the config is composed, so that nothing is written (the run directory is not even made).
BEFORE_COMPOSING = [
    ("train", ["trainer.max_epoch=3"], "trainer.max_epoch: no such key in the config; did you mean trainer.max_epochs"),
    ("train", ["+trainer.max_epoch=3"], "+trainer.max_epoch: did you mean trainer.max_epochs?"),
    ("train", ["optimizer.lr=0.1"], "optimizer.lr: no such key in the config; did you mean model.optimizer.lr?"),
    ("eval", ["ckpt_path=x.ckpt", "data.test_clip=4"], "data.test_clip: no such key in the config; did you mean"),
    ("export", ["ckpt_path=x.ckpt", "batchsize=2"], "batchsize: no such key in the config; did you mean batch_size?"),
    ("predict", ["video=x.mp4", "topk=3"], "topk: no such key in the config; did you mean top_k?"),
    ("check_data", ["data.rot=/videos"], "data.rot: no such key in the config; did you mean data.root?"),
    ("prepare_data", ["out=/fast", "short_sid=128"], "short_sid: no such key in the config; did you mean short_side?"),
]


@pytest.mark.parametrize(("script", "overrides", "message"), BEFORE_COMPOSING)
def test_unknown_keys_are_answered_with_the_key_meant(script, overrides, message, tmp_path: Path) -> None:
    assert_fails_before_torch(script, overrides, message, tmp_path)


def test_a_key_to_add_is_checked_only_when_it_is_a_near_miss(tmp_path: Path) -> None:
    """``+key`` adds a key that the config files do not have: taken, unless one beside it has a close name;
    ``++key`` insists."""
    check_command_line("train", ["+trainer.accumulate_grad_batches=2", "++trainer.max_epoch=3", "data.root=/videos"])
    with pytest.raises(SystemExit, match=r"did you mean trainer.max_epochs\? \(\+\+trainer.max_epoch=... adds"):
        check_command_line("train", ["+trainer.max_epoch=3"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batch_size=sixteen"], "data.batch_size='sixteen': expected an integer"),
        (["trainer.deterministic=maybe"], "trainer.deterministic='maybe': expected true, false or warn"),
        (["model=factorised_self_attention", "model.net.pool=cls"], "set model.net.pool=mean"),
        (["model=factorised_dot_product", "backbone.num_heads=3", "backbone.embed_dim=48"], "num_heads must be even"),
        (["data.num_frames=15"], "frames (15) is not divisible"),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path='/no/such.ckpt' is not a file"),
        (["trainer=gpu"], "trainer.accelerator=gpu: no GPU is visible on this machine; use trainer=cpu"),
        (["trainer=ddp"], "trainer.accelerator=gpu: no GPU is visible on this machine; use trainer=cpu"),
    ],
)
def test_config_errors_fail_before_torch_is_imported(overrides: list[str], message: str, tmp_path: Path) -> None:
    """src/train.py runs the checks that need no torch before it imports torch: a mistake in the command
    fails at once (Hydra's start, not seconds of imports), in one line naming the key or the combination."""
    assert_fails_before_torch("train", overrides, message, tmp_path)


CHECKPOINT_READERS = ("eval", "predict", "export")


@pytest.fixture
def checkpoint_file(tmp_path: Path) -> Path:
    """A file that torch.save wrote (what the checks before torch look at: not a run's checkpoint)."""
    torch.save({}, tmp_path / "any.ckpt")
    return tmp_path / "any.ckpt"


@pytest.mark.parametrize(
    ("script", "overrides", "message"),
    [
        ("eval", [], "give ckpt_path=<...>: no default"),
        ("export", [], "give ckpt_path=<...>: no default"),
        ("predict", [], "give video=<...>: no default"),
        ("export", ["format=tflite"], "format='tflite': choose one of onnx, torch_export"),
        ("export", ["format=ONNX"], "format='ONNX': choose one of onnx, torch_export"),
        ("export", ["batch_size=two"], "batch_size='two': expected an integer, or null"),
        ("export", ["batch_size=0"], "batch_size=0: expected a number of clips, or null for a dynamic batch"),
        ("eval", ["data.batch_size=sixteen"], "data.batch_size='sixteen': expected an integer, or null"),
        ("eval", ["data.skip_bad_eval_videos=maybe"], "data.skip_bad_eval_videos='maybe': expected true or false"),
        ("eval", ["trainer=gpu"], "trainer.accelerator=gpu: no GPU is visible on this machine; use trainer=cpu"),
        ("predict", ["top_k=five"], "top_k='five': expected an integer"),
        ("prepare_data", [], "give out=<...>: no default"),
        ("prepare_data", [f"out={ROOT / 'no_such_dir'}", "codec=h265"], "codec='h265': choose one of"),
        *(
            (s, ["ckpt_path=/no/such.ckpt"], "ckpt_path='/no/such.ckpt' is not a file")
            for s in ("eval", "predict", "export")
        ),
        *((s, ["seed=one"], "seed='one': expected an integer") for s in ("eval", "predict", "export")),
    ],
)
def test_other_entry_points_check_before_torch_is_imported(
    script: str, overrides: list[str], message: str, checkpoint_file: Path, tmp_path: Path
) -> None:
    """The same checks in every entry point: the values the command must give, types, choices, the GPU."""
    if "give" not in message and script in CHECKPOINT_READERS:
        overrides = [f"ckpt_path={checkpoint_file}", *(["video=x.mp4"] if script == "predict" else []), *overrides]
    assert_fails_before_torch(script, overrides, message, tmp_path)


@pytest.mark.parametrize("script", ["train", "check_data"])
def test_a_root_that_holds_no_dataset_is_answered_before_torch(script: str, tmp_path: Path) -> None:
    """Issue 17: data.root empty (or a file, or absent: test_datasets) is answered by the annotation readers, which
    need no torch: what was looked for, the layout expected and, outside src/check_data.py, the next step."""
    (tmp_path / "empty").mkdir()
    root = tmp_path / "empty"
    looked_for = f"data.root={root} is empty: annotation file not found: none of ['train.csv'] is in {root}/annotations"
    line = assert_fails_before_torch(script, ["data=kinetics400", f"data.root={root}"], looked_for, tmp_path)
    assert ". Expected under data.root: annotations/{train,val,test}.csv" in line
    assert line.endswith(f"with: python src/check_data.py data=kinetics400 data.root={root}") == (script == "train")


def assert_fails_before_torch(script: str, overrides: list[str], message: str, tmp_path: Path) -> str:
    """``message`` is in the command's only line on stderr (returned), torch was not imported, and no run
    directory was made. No GPU is visible to the command."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = run_script(script, *overrides, f"hydra.run.dir={tmp_path / 'run'}", env=env, python=["-X", "importtime"])
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert imported and not imported & {"torch", "lightning", "timm"}
    assert not (tmp_path / "run").exists()
    return lines[0]


def test_rule_messages_name_keys_that_exist(tmp_path: Path) -> None:
    """Every dotted key that a network rule's message names is a key of the composed config."""
    from vivit.config import check_network_config

    cases = [
        ["model=factorised_self_attention", "model.net.pool=cls"],
        ["model=factorised_dot_product", "backbone.num_heads=3", "backbone.embed_dim=48"],
        ["backbone.num_heads=5"],
        ["data.num_frames=15"],
        ["data.crop_size=30"],
        ["tokeniser=uniform_frame", "model.net.tokeniser.patch_size=[2,8]"],
    ]
    for overrides in cases:
        cfg = compose_config(overrides=overrides, output_dir=tmp_path)
        with pytest.raises(ValueError) as error:
            check_network_config(cfg)
        named = re.findall(r"\b[a-z_]+(?:\.[a-z_]+)+", str(error.value))
        assert named, str(error.value)
        for key in named:
            assert OmegaConf.select(cfg, key, default=KeyError) is not KeyError, (key, str(error.value))


def test_sweep_job_names_are_one_short_stable_directory_each() -> None:
    """A job directory is named by its overrides: a path in a value must not nest it, a long one is cut with a
    hash of the whole, and different overrides keep different names."""
    assert short_name("model=spatiotemporal,seed=1") == "model=spatiotemporal,seed=1"
    names = [short_name(n) for n in ("ckpt=/a/b.ckpt", "ckpt=/a_b.ckpt", "x=" + "1" * 300, "x=" + "1" * 299 + "2")]
    assert all("/" not in n and len(n) <= 120 for n in names)
    assert len(set(names)) == len(names)
    assert names[0] == short_name("ckpt=/a/b.ckpt")  # stable across re-runs


@pytest.mark.parametrize(
    ("script", "overrides", "message"),
    [
        ("train", ["data=kinetics400", "data.min_resize=big"], "data.min_resize='big': expected an integer, or null"),
        ("train", ["data.batch_size=8", "data.batch_size=sixteen"], "data.batch_size='sixteen': expected an integer"),
        ("train", ["data.mean=0.5"], "data.mean='0.5': expected a list of numbers, in brackets"),
        ("train", ["data.generate.num_train=ten"], "data.generate.num_train='ten': expected an integer"),
        ("train", ["model.optimizer.lr=fast"], "model.optimizer.lr='fast': expected a number"),
        ("train", ["optimizer=sgd", "model.optimizer.momentum=high"], "model.optimizer.momentum='high': expected a"),
        ("train", ["model.scheduler.warmup_epochs=few"], "model.scheduler.warmup_epochs='few': expected a number"),
        ("train", ["regularisation=ssv2", "regularisation.mixup_alpha=x"], "regularisation.mixup_alpha='x': expected"),
        ("train", ["backbone.embed_dim=big"], "backbone.embed_dim='big': expected an integer"),
        ("train", ["model.net.temporal_depth=four"], "model.net.temporal_depth='four': expected an integer"),
        ("train", ["model=spatiotemporal", "model.net.temporal_depth=2"], "model.net.temporal_depth: no such key in"),
        ("train", ["model.net.tokeniser.patch_size=[2,x,16]"], "Value 'x' of type 'str' could not be converted to"),
        ("train", ["model.view_average=[1]"], "model.view_average='[1]': expected"),
        ("train", ["trainer=ddp", "trainer.sync_batchnorm=maybe"], "trainer.sync_batchnorm='maybe': expected true or"),
        ("train", ["test=maybe"], "test='maybe': expected true or false"),
        ("train", ["optimizer.lr=0.1"], "optimizer.lr: no such key in the config; did you mean model.optimizer.lr?"),
        ("train", ["+data.root=/videos"], "Could not append to config. An item is already at 'data.root'. Either"),
        ("eval", ["ckpt_path=x.ckpt", "data.test_clips=four"], "data.test_clips='four': expected an integer, or null"),
        ("export", ["ckpt_path=x.ckpt", "atol=small"], "atol='small': expected a number"),
        ("check_data", ["data=ssv2", "workers=many"], "workers='many': expected an integer, or null"),
        ("prepare_data", ["out=/fast", "crf=good"], "crf='good': expected an integer"),
    ],
)
def test_wrong_types_are_refused_as_hydra_composes(script: str, overrides: list[str], message: str) -> None:
    """The schemas of vivit.schemas type the keys of every entry point: Hydra refuses a value of another type as
    it composes, and check_command_line (before the run starts) answers with one line naming the key, the value
    and the type; a value of the right type passes."""
    with pytest.raises(SystemExit) as error:
        check_command_line(script, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_values_of_the_types_a_key_takes_pass() -> None:
    """1e-4 is a number (text to PyYAML); null where a key may be null; the words that untyped keys take."""
    check_command_line("train", ["data=kinetics400", "data.min_resize=null", "data.mean=[0.45,0.45,0.45]"])
    check_command_line("train", ["model.optimizer.lr=1e-4", "trainer.devices=auto", "trainer.deterministic=warn"])
    check_command_line("eval", ["ckpt_path=x.ckpt", "data.test_clips=4", "data.root=/videos", "data.generate=null"])


def test_eval_takes_every_data_key_also_for_a_checkpoint_older_than_the_key(tiny_cfg, tmp_path: Path) -> None:
    """``data.<key>=value`` of src/eval.py replaces the checkpoint's setting, for any key of the data configs (no
    ``+``), also one that the checkpoint's config does not have; a key that the data module does not take either
    is refused by name."""
    from helpers import write_checkpoint
    from vivit.checkpoints import check_accepted
    from vivit.pipeline import evaluate

    cfg = tiny_cfg()
    with open_dict(cfg.data):  # typed (vivit.schemas): its own flag
        del cfg.data["skip_bad_eval_videos"]  # written before the key existed
    ckpt = write_checkpoint(cfg, tmp_path / "old.ckpt")
    overrides = [f"ckpt_path={ckpt}", "data.skip_bad_eval_videos=true", "trainer.limit_test_batches=1"]
    eval_cfg = compose_config("eval", overrides, tmp_path / "eval")
    assert eval_cfg.data.skip_bad_eval_videos is True and eval_cfg.data.batch_size is None  # null: the checkpoint's
    assert evaluate(eval_cfg)["test/videos"] == cfg.data.batch_size
    with pytest.raises(ValueError, match="data.no_such_key: the checkpoint's data config has no such key and vivit"):
        check_accepted(cfg.data, {"no_such_key": 1, "batch_size": 2}, "data")


def test_internal_configs_are_no_options_and_make_answers_like_python(tmp_path: Path) -> None:
    """--help lists only options that can be chosen (the shared parts of model=, sweep= and trainer= are not
    among them), and `make train` gives Hydra's short answer to a wrong option, not a stack trace."""
    proc = run_script("train", "--help")
    assert "trainer: cpu, ddp, gpu\n" in proc.stdout
    assert (
        "model: factorised_dot_product, factorised_encoder, factorised_self_attention, spatiotemporal\n" in proc.stdout
    )
    groups = proc.stdout.split("== Config ==")[0]
    assert not re.search(r"_classifier|_sweep|_video|schema", groups)  # conf/_*.yaml, vivit.schemas: no groups'
    if not shutil.which("make"):
        pytest.skip("no make")
    make = ["make", "-s", "-o", ".venv/.installed", "train", "ARGS=model=factorised_encodr"]
    proc = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PY": sys.executable})
    assert proc.returncode != 0
    assert "Could not find 'model/factorised_encodr'" in proc.stderr and "Traceback" not in proc.stderr
