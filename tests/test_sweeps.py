"""The command line as users run it: src/train.py in a subprocess, multirun, W&B offline."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from helpers import CONF, ROOT, TINY_DATA, TINY_NET, run_script


def run_train(
    *args: str, multirun: bool = False, env: dict | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    flags = ["--multirun"] if multirun else []
    proc = run_script("train", *flags, *TINY_DATA, *TINY_NET, *args, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run_model_sweep(data_dir: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """A two-job multirun (Model 1, Model 2) of one batch each, in ``tmp_path / "sweep"``: jobs 0 and 1."""
    sweep = tmp_path / "sweep"
    proc = run_train(
        "model=spatiotemporal,factorised_encoder",
        "debug=fdr",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path}",
        f"hydra.sweep.dir={sweep}",
        *args,
        multirun=True,
    )
    return proc, sweep


def test_multirun_writes_one_directory_per_job(data_dir: Path, tmp_path: Path) -> None:
    """tokeniser x model x regularisation: 8 jobs, each in its own directory, which it locks while it runs, with
    its own combination."""
    run_train(
        "tokeniser=uniform_frame,tubelet",
        "model=spatiotemporal,factorised_encoder",
        "regularisation=none,table4_6_mixup",
        "debug=fdr",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        multirun=True,
    )
    jobs = sorted(
        (p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    assert [p.name for p in jobs] == [str(i) for i in range(8)]
    combinations = set()
    for job in jobs:
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        axes = json.loads((job / "results.json").read_text())["axes"]
        assert (
            config["model"]["net"]["_target_"].rsplit(".", 1)[1]
            == {"spatiotemporal": "SpatioTemporal", "factorised_encoder": "FactorisedEncoder"}[axes["model"]]
        )
        assert config["regularisation"]["mixup_alpha"] == (0.1 if axes["regularisation"] == "table4_6_mixup" else 0.0)
        combinations.add((axes["tokeniser"], axes["model"], axes["regularisation"]))
        assert (job / ".lock").is_file()  # each job locked its directory while it ran (test_run_record.py)
    assert len(combinations) == 8


def test_invalid_combination_fails_fast_with_its_name(data_dir: Path, tmp_path: Path) -> None:
    proc = run_script(
        "train",
        *TINY_DATA,
        *TINY_NET,
        "model=factorised_self_attention",
        "model.net.pool=cls",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode != 0
    assert "pool=mean" in proc.stderr and "FactorisedSelfAttention" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_ddp_multirun_runs_each_job_once_in_its_directory(data_dir: Path, tmp_path: Path) -> None:
    """-m with trainer=ddp: Lightning starts rank 1 from the command line, which would be the whole sweep.
    Each job must run once, on two processes, with both ranks' logs in that job's directory."""
    proc, sweep = run_model_sweep(
        data_dir, tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"], jobs
    for job in jobs:
        results = json.loads((sweep / job / "results.json").read_text())
        assert results["axes"]["model"] == ["spatiotemporal", "factorised_encoder"][int(job)]
        log = (sweep / job / "train.log").read_text()  # both ranks log here
        assert log.count("x 2 processes") == 2 and "GLOBAL_RANK: 1" in log
    assert proc.stdout.splitlines().count("Summary") == 2  # rank 0 of each job, once


@pytest.mark.slow
def test_wandb_logs_offline_without_an_account(data_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc: not logged in
    proc = run_train(
        "logger=wandb",
        "debug=limit",
        "trainer.max_epochs=1",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        env=env,
    )
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), proc.stdout[-2000:]


@pytest.mark.parametrize("resume", [[], ["resume="]], ids=["plain", "empty_resume"])
def test_plain_command_runs_in_a_new_directory_under_logs(data_dir: Path, tmp_path: Path, resume: list) -> None:
    """src/train.py with neither resume=<dir> nor hydra.run.dir= (make train): the run gets its own directory
    logs/train/runs/<time>_<suffix>, under the directory it is launched from with paths.root_dir=. (under the
    project root by default: test_run_record.py)."""
    run_train("debug=fdr", f"paths.data_dir={data_dir}", "paths.root_dir=.", *resume, cwd=tmp_path)
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "train.log").is_file()


def test_named_sweep_skips_finished_jobs_and_reports(data_dir: Path, tmp_path: Path) -> None:
    """sweep=... runs its grid in stable per-job directories; a re-run skips what finished; report.py
    tabulates the runs with their axis, accuracy, GMACs and parameters, and plots them. Run from another
    directory with paths.root_dir=.: logs/ goes there."""
    args = ["sweep=table3_temporal_layers", "model.net.temporal_depth=0,2", "debug=fdr", f"paths.data_dir={data_dir}"]
    args += ["paths.root_dir=."]
    run_train(*args, cwd=tmp_path)
    sweep = tmp_path / "logs" / "train" / "sweeps" / "table3_temporal_layers"
    results = sorted(sweep.glob("*/results.json"))
    assert len(results) == 2 and all(len(p.parent.name) <= 120 for p in results)  # hashed when long
    depths = {
        yaml.safe_load((p.parent / ".hydra" / "config.yaml").read_text())["model"]["net"]["temporal_depth"]
        for p in results
    }
    assert depths == {0, 2}
    stamps = [p.stat().st_mtime_ns for p in results]
    records = [(p.parent / ".hydra" / "config.yaml").stat().st_mtime_ns for p in results]

    proc = run_train(*args, cwd=tmp_path)
    assert proc.stdout.count("this run has finished, skipping it") + proc.stderr.count("skipping it") >= 2
    assert [p.stat().st_mtime_ns for p in results] == stamps
    # each job's record stays its own: the re-run's goes to .hydra/resumed/<time>/
    assert [(p.parent / ".hydra" / "config.yaml").stat().st_mtime_ns for p in results] == records
    assert all(list((p.parent / ".hydra" / "resumed").glob("*/overrides.yaml")) for p in results)

    report = run_script("report", str(sweep), timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    table = (sweep / "report.md").read_text().splitlines()
    assert table[2].startswith("| model.net.temporal_depth | top-1 | top-5 | GMACs | params (M) | clips/s |")
    rows = [line.split(" | ") for line in table[4:]]
    assert [r[0] for r in rows] == ["| 0", "| 2"]
    params = [float(r[4]) for r in rows]
    assert params[1] > params[0]  # two temporal layers add parameters
    assert (sweep / "report.png").stat().st_size > 0


def test_report_reads_results_written_before_the_gmacs_key(tmp_path: Path) -> None:
    """results.json files of earlier versions hold the MACs per clip as ``gflops``: the report shows them as
    GMACs, like those written now."""
    from vivit.report import RESULTS_FILE, collect, markdown_table

    for name, key in (("earlier", "gflops"), ("now", "gmacs")):
        (tmp_path / name).mkdir()
        results = {"overrides": {"run": name}, key: 0.0332, "test/acc_top1": 0.25}
        (tmp_path / name / RESULTS_FILE).write_text(json.dumps(results))
    rows = collect(tmp_path)
    assert [(row["run"], row["gmacs"]) for row in rows] == [("earlier", 0.0332), ("now", 0.0332)]
    table = markdown_table(rows).splitlines()
    assert table[0] == "| run | top-1 | top-5 | GMACs | params (M) | clips/s |"
    assert table[2:] == ["| earlier | 0.250 | – | 0.0332 | – | – |", "| now | 0.250 | – | 0.0332 | – | – |"]


def test_slurm_launcher_submits_one_task_per_device_with_lightnings_requeue(tmp_path: Path, monkeypatch) -> None:
    """hydra/launcher=slurm (conf/hydra/launcher/slurm.yaml): the launcher's fields follow the trainer, and
    the sbatch script it would submit asks SLURM for SIGUSR1 before the time limit (Lightning's requeue
    signal, not submitit's SIGUSR2) and allows requeueing. Built by the plugin as on a cluster, not submitted."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    overrides = ["sweep=table2_model_variants", "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4"]
    overrides += ["trainer.num_nodes=2", "hydra.launcher.partition=gpu", f"paths.log_dir={tmp_path}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # the previous one comes back after the test
    HydraConfig.instance().set_config(cfg)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    sweep = tmp_path / "train" / "sweeps" / "table2_model_variants"
    assert launcher["submitit_folder"] == f"{sweep}/.submitit/%j"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["max_num_timeout"] == 0  # submitit's own requeue stays off

    scripts = []

    def submit(executor: SlurmExecutor, submissions: list) -> list:
        scripts.append(executor._make_submission_file_text(executor._submitit_command_str, "uid"))
        return [SimpleNamespace(results=lambda: [None]) for _ in submissions]

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # as if srun were here
    monkeypatch.setattr(SlurmExecutor, "_internal_process_submissions", submit)
    plugin = instantiate(cfg.hydra.launcher)
    plugin.config = cfg  # what Hydra's setup() gives it
    assert plugin.launch([["model=spatiotemporal"], ["model=factorised_encoder"]], initial_job_idx=0) == [None, None]
    lines = set(scripts[0].splitlines())
    expected = ["--signal=USR1@120", "--requeue", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4"]
    expected += ["--cpus-per-task=10", "--partition=gpu", "--time=1440"]
    assert {f"#SBATCH {flag}" for flag in expected} <= lines, scripts[0]
    assert f"#SBATCH --output={sweep}/.submitit/%j/%j_0_log.out" in lines


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_job(data_dir: Path, tmp_path: Path) -> None:
    """hydra/launcher=submitit_local: the jobs are pickled and run by submitit, in processes of their own
    (as on SLURM, without the cluster), each writing its own results."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    _, sweep = run_model_sweep(data_dir, tmp_path, "hydra/launcher=submitit_local")
    for job, model in enumerate(["spatiotemporal", "factorised_encoder"]):
        assert json.loads((sweep / str(job) / "results.json").read_text())["axes"]["model"] == model
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # submitit ran both


def write_results(sweep: Path, *runs: tuple[dict, float]) -> None:
    """One job directory per (overrides, test top-1), as a sweep leaves them (GMACs and parameters per model)."""
    for i, (overrides, top1) in enumerate(runs):
        (sweep / str(i)).mkdir(parents=True)
        results = {"overrides": overrides, "test/acc_top1": top1, "gmacs": 1.5, "params_m": 2.25}
        (sweep / str(i) / "results.json").write_text(json.dumps(results))


def test_report_averages_the_three_splits(tmp_path: Path) -> None:
    """data.split=1,2,3 (UCF-101 and HMDB-51's standard report): one row, the mean ± sample std over the splits
    and n; the runs follow in their own table."""
    from vivit.report import write_report

    common = {"experiment": "ucf101_finetune", "data.root": "/data/ucf101"}
    write_results(tmp_path, *(({**common, "data.split": str(k)}, top1) for k, top1 in ((1, 0.8), (2, 0.9), (3, 0.7))))
    md, png = write_report(tmp_path)
    text = md.read_text()
    assert "Mean ± standard deviation over data.split, n runs each:" in text
    averaged, runs = text.split("## Runs")
    table = [line for line in averaged.splitlines() if line.startswith("|")]
    assert table[0] == "| n | top-1 | top-5 | GMACs | params (M) | clips/s |"
    assert table[2] == "| 3 | 0.800 ± 0.100 | – | 1.5 | 2.25 | – |"  # the sample std of 0.8, 0.9, 0.7: 0.1
    assert [line.split(" | ")[0] for line in runs.splitlines() if line.startswith("| ")] == ["| data.split"] + [
        f"| {k}" for k in (1, 2, 3)
    ]
    assert png.stat().st_size > 0


def test_report_averages_seeds_per_model_and_says_when_rows_are_not_separated(tmp_path: Path) -> None:
    """seed=0,1 x models: one row per model with n; a single run's std is a dash; rows whose mean ± std intervals
    overlap are marked and named in a footnote, a row apart from them is not."""
    from vivit.report import aggregate, averaged_table, collect

    models = {  # 0.55 ± 0.071 and 0.60 ± 0.028 overlap; 0.9 (one run) has no interval
        "spatiotemporal": (0.50, 0.60),
        "factorised_encoder": (0.58, 0.62),
        "factorised_dot_product": (0.9,),
    }
    runs = [({"model": m, "seed": str(s)}, top1) for m, values in models.items() for s, top1 in enumerate(values)]
    write_results(tmp_path, *runs)
    axes, groups = aggregate(collect(tmp_path))
    assert axes == ["model"] and [len(g["runs"]) for g in groups] == [1, 2, 2]
    table = averaged_table(axes, groups).splitlines()
    assert table[0] == "| model | n | top-1 | top-5 | GMACs | params (M) | clips/s |"
    assert table[2:5] == [
        "| factorised_dot_product | 1 | 0.900 ± – | – | 1.5 | 2.25 | – |",
        "| factorised_encoder | 2 | 0.600 ± 0.028† | – | 1.5 | 2.25 | – |",
        "| spatiotemporal | 2 | 0.550 ± 0.071† | – | 1.5 | 2.25 | – |",
    ]
    assert table[5:] == [
        "",
        "† not separated: the top-1 mean ± std of model=factorised_encoder and of model=spatiotemporal overlap.",
    ]


def test_report_plot_puts_rows_of_equal_cost_side_by_side(tmp_path: Path) -> None:
    """Rows that differ in cost go on the GMACs axis; rows that all cost the same (Table 4's regularisers) each
    get a column of their own, labelled, rather than one stack of points."""
    from vivit.report import aggregate, collect, x_axis

    write_results(tmp_path, *(({"regularisation": r, "seed": str(s)}, 0.5) for r in ("none", "mixup") for s in (0, 1)))
    xs, label, ticks = x_axis(aggregate(collect(tmp_path))[1])
    assert (xs, label, ticks) == ([0, 1], "", ["mixup", "none"])
    groups = [{"overrides": {"model": m}, "stats": {"gmacs": (g, None, 1)}} for m, g in (("a", 1.0), ("b", 2.0))]
    assert x_axis(groups) == ([1.0, 2.0], "GMACs per clip (the paper's GFLOPs)", None)


@pytest.mark.parametrize(("dataset", "classes", "epochs"), [("ucf101", 101, 20), ("hmdb51", 51, 30)])
def test_finetune_recipe_composes_with_its_split_sweep(dataset: str, classes: int, epochs: int) -> None:
    """experiment=<dataset>_finetune sweep=<dataset>_splits, as the README runs it: the network of the released
    Kinetics-400 ViViT-B/16x2 (its config.json fits, all but the class count) with a new classifier, the paper's
    optimiser, schedule and small-dataset regularisers, and one job per official split named without the paths."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from vivit.models.init import HFViViTInit
    from vivit.models.init.hf_vivit import hf_vivit_mismatches

    overrides = [f"experiment={dataset}_finetune", f"sweep={dataset}_splits", "init.source=/models/vivit"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"data.root=/data/{dataset}"], return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    assert (choices.data, choices.model, choices.backbone, choices.tokeniser) == (
        dataset,
        "spatiotemporal",
        "b",
        "tubelet",
    )
    assert (choices.optimizer, choices.scheduler, choices.regularisation) == ("sgd", "cosine_warmup", "epic_kitchens")
    assert (cfg.data.num_classes, cfg.data.split, cfg.trainer.max_epochs) == (classes, 1, epochs)
    assert cfg.hydra.sweeper.params == {"data.split": "1,2,3"}
    assert {"data.root", "init.source"} <= set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert cfg.model.optimizer.lr < 0.1 and cfg.regularisation.drop_path_rate > 0 and cfg.regularisation.mixup_alpha > 0

    init = instantiate(cfg.init)
    assert isinstance(init, HFViViTInit) and (init.source, init.classifier) == ("/models/vivit", "replace")
    with torch.device("meta"):
        net = instantiate(cfg.model.net)
    released = {"id2label": {str(i): f"class {i}" for i in range(400)}}  # config.json: the rest at VivitConfig's
    assert hf_vivit_mismatches(released, net, "replace") == []
    assert hf_vivit_mismatches(released, net, "keep") == [
        f"num_labels=400 needs data.num_classes=400, or init.classifier=replace to fine-tune a new classifier of "
        f"data.num_classes outputs (the network has {classes})"
    ]


@pytest.mark.slow  # three fine-tuning jobs and the report, in subprocesses: about a minute on 2 cores
def test_finetune_split_sweep_and_its_report_as_the_readme_runs_them(tmp_path: Path) -> None:
    """The README's commands, on a tiny UCF-101 release (test_ucf_hmdb.py's fixture) and a tiny random
    transformers ViViT with other classes: three jobs, one per official split, each loading every weight but the
    classifier; then src/report.py gives one row, n = 3, and the runs."""
    transformers = pytest.importorskip("transformers")
    from test_ucf_hmdb import UCF_CLASSES, write_ucf101

    write_ucf101(tmp_path / "ucf101")
    config = transformers.VivitConfig(
        image_size=32,
        num_frames=4,
        tubelet_size=[2, 16, 16],
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        num_labels=7,
    )  # hidden_act: gelu_fast, as released
    transformers.VivitForVideoClassification(config).save_pretrained(tmp_path / "vivit")
    classes = len(UCF_CLASSES)
    small = ["trainer=cpu", "trainer.max_epochs=1", *TINY_NET, "data.num_frames=4", "data.crop_size=32"]
    small += ["data.min_resize=null", "data.batch_size=2", "data.num_workers=0", "data.test_clips=1"]
    small += ["data.test_crops=1", f"data.heads.label={classes}", f"data.num_classes={classes}"]
    proc = run_script(
        "train",
        "experiment=ucf101_finetune",
        "sweep=ucf101_splits",
        f"init.source={tmp_path / 'vivit'}",
        f"data.root={tmp_path / 'ucf101'}",
        "paths.root_dir=.",
        *small,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep = tmp_path / "logs" / "train" / "sweeps" / "ucf101_splits"
    jobs = [p.parent for p in sweep.glob("*/results.json")]
    splits = [yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["data"]["split"] for job in jobs]
    assert sorted(splits) == [1, 2, 3]
    for job in jobs:
        report = json.loads((job / "init_report.json").read_text())
        assert report["fresh"] == ["head.weight", "head.bias"]
        assert report["unused"] == ["classifier.weight", "classifier.bias"]

    proc = run_script("report", str(sweep), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    averaged, runs = (sweep / "report.md").read_text().split("## Runs")
    rows = [line for line in averaged.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 and rows[1].startswith("| 3 | ")  # the header, then one row of three splits
    assert len([line for line in runs.splitlines() if line.startswith("| ")]) == 4
