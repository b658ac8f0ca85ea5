"""hparams_search=<name>: Optuna searches (vivit.search) whose trials are ordinary runs of a sweep."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from helpers import CONF, TINY_DATA, TINY_NET, compose_config, run_script, start_script
from vivit.search import PruneTrial, contains, search_space
from vivit.trainer import instantiate_callbacks

SEARCHES = sorted(p.stem for p in (Path(CONF) / "hparams_search").glob("*.yaml"))
# A pruner that prunes every trial at its first report (no accuracy reaches 1.1).
PRUNE_ALL = ["hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "+hydra.sweeper.pruner.lower=1.1"]
PRUNE_ALL += ["~hydra.sweeper.pruner.n_startup_trials", "hydra.sweeper.pruner.n_warmup_steps=0"]


def search_args(data_dir: Path, tmp_path: Path, *args: str) -> list[str]:
    """A search of the built-in one on tiny data: two epochs of a few batches per trial."""
    common = ["--multirun", "hparams_search=moving_digits_lr_wd", *TINY_DATA, *TINY_NET, "debug=limit"]
    common += [f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}", "callbacks.progress_bar.refresh_rate=0"]
    return [*common, *args]


def run_search(data_dir: Path, tmp_path: Path, *args: str) -> tuple[Path, optuna.Study]:
    proc = run_script("train", *search_args(data_dir, tmp_path, *args))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return study_of(tmp_path / "train" / "sweeps" / "moving_digits_lr_wd")


def study_of(sweep: Path) -> tuple[Path, optuna.Study]:
    """The sweep directory and its study, opened with optuna alone."""
    study = optuna.load_study(study_name="moving_digits_lr_wd", storage=f"sqlite:///{sweep / 'study.db'}")
    return sweep, study


@pytest.mark.parametrize("name", SEARCHES)
def test_each_search_composes_and_searches_keys_of_its_config(name: str, tmp_path: Path) -> None:
    """Every key searched is a key of the composed config, and its value there lies in its space: trial 0 of a
    new study runs the config's own values, the baseline of the report."""
    cfg = compose_config("train", [f"hparams_search={name}"], output_dir=tmp_path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        sweeper = compose("train", [f"hparams_search={name}"], return_hydra_config=True).hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.vivit_optuna_sweeper.OptunaSweeper"
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/acc_top1"
    assert [type(c) for c in instantiate_callbacks(cfg.callbacks) if isinstance(c, PruneTrial)] == [PruneTrial]
    assert cfg.callbacks.optuna_pruning.monitor == cfg.optimized_metric
    fixed, space = search_space(OmegaConf.to_container(sweeper.params))
    assert not fixed and {"model.optimizer.lr", "model.optimizer.weight_decay"} <= set(space)
    assert space["model.optimizer.lr"].log
    for key, distribution in space.items():
        assert contains(distribution, OmegaConf.select(cfg, key)), key


def test_search_space_reads_hydra_optuna_sweepers_syntax() -> None:
    fixed, space = search_space(
        {"a": "tag(log, interval(1e-4, 1e-2))", "b": "range(1, 4)", "c": "choice(x, y)", "d": "x,y", "e": "3"}
    )
    assert fixed == ["e=3"]
    assert space["a"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["b"] == IntDistribution(1, 3)  # Hydra's range excludes its end
    assert space["c"] == space["d"] == CategoricalDistribution(["x", "y"])


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("hydra.sweeper.direction=maximise", "hydra.sweeper.direction=maximise: expected maximize or minimize"),
        ("model.optimizer.lrr=interval(0.1,1)", "search space: model.optimizer.lrr: no such key in the config"),
    ],
    ids=["direction", "key"],
)
def test_a_mistake_is_named_in_one_line_before_any_trial(
    data_dir: Path, tmp_path: Path, mistake: str, message: str
) -> None:
    proc = run_script("train", *search_args(data_dir, tmp_path, mistake))
    assert proc.returncode != 0
    assert proc.stderr.strip() == message, proc.stderr[-2000:]
    assert not list(tmp_path.glob("train/sweeps/*/0"))


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("postgres://u@127.0.0.1:1/db", "not a database URL SQLAlchemy knows (Can't load plugin"),
        ("sqlite:////no/such/folder/study.db", "cannot open the study's database: unable to open database file"),
        ("postgresql+psycopg2://u:secret@127.0.0.1:1/db", "postgresql+psycopg2://u:***@127.0.0.1:1/db: "),
    ],
    ids=["scheme", "sqlite-folder", "server"],
)
def test_a_storage_that_cannot_be_opened_is_named_in_one_line(
    data_dir: Path, tmp_path: Path, storage: str, message: str
) -> None:
    """Without its driver (psycopg2: "no database driver") or without a server there ("cannot open"), the
    study's database is named in one line, its password hidden."""
    proc = run_script("train", *search_args(data_dir, tmp_path, f"hydra.sweeper.storage={storage}"))
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("hydra.sweeper.storage=") and message in line and "secret" not in line, line
    assert not list(tmp_path.glob("train/sweeps/*/0"))


def test_processes_that_share_a_study_draw_their_own_values(tmp_path: Path) -> None:
    """Two processes working on one study with the config's sampler seed (two study handles on one database
    here) draw different values, and each trial's values depend on the seed and its number, not on which
    process asks: with one seeded sampler per process, the two would ask for the same values, trial for trial."""
    from vivit.search import SeededPerTrial

    sampler = OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "seed": 42, "n_startup_trials": 5})
    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "wd": FloatDistribution(0.0, 0.3)}

    def asked(storage: str, handles: int) -> list[dict]:
        studies = [
            optuna.create_study(storage=storage, study_name="s", sampler=SeededPerTrial(sampler), load_if_exists=True)
            for _ in range(handles)
        ]
        return [studies[n % handles].ask(space).params for n in range(4)]

    shared = asked(f"sqlite:///{tmp_path / 'shared.db'}", handles=2)
    assert len({tuple(p.values()) for p in shared}) == 4
    assert shared == asked(f"sqlite:///{tmp_path / 'alone.db'}", handles=1)


@pytest.mark.parametrize(
    ("error", "reason", "calls"),
    [  # what each database told the process that lost the race (seen here), and an error that is no race
        ("IntegrityError", 'duplicate key value violates unique constraint "pg_type_typname_nsp_index"', 2),
        ("OperationalError", "table alembic_version already exists", 2),
        ("OperationalError", "connection refused", 1),
    ],
    ids=["postgresql", "sqlite", "no-race"],
)
def test_a_process_that_loses_the_race_to_create_the_tables_opens_them_again(
    tmp_path: Path, monkeypatch, error: str, reason: str, calls: int
) -> None:
    """Processes that open a new study database at once race to create its tables; a loser's CREATE fails (seen
    with a SLURM job array on PostgreSQL, and two searches started together on SQLite), and it opens the
    database again. Any other error is raised at once."""
    import sqlalchemy.exc

    import vivit.search

    opened = []

    def racing(url: str, **settings):
        opened.append(url)
        if len(opened) == 1:
            raise getattr(sqlalchemy.exc, error)("CREATE TABLE", {}, Exception(reason))
        return optuna.storages.RDBStorage(url, **settings)

    monkeypatch.setattr(vivit.search, "RDBStorage", racing)
    monkeypatch.setattr(vivit.search.time, "sleep", lambda seconds: None)
    info = {"study_name": "s", "storage": f"sqlite:///{tmp_path / 'study.db'}", "direction": "maximize"}
    if calls == 1:
        with pytest.raises(SystemExit, match="cannot open the study's database: connection refused"):
            vivit.search.open_study(info, heartbeat=30)
    else:
        assert vivit.search.open_study(info, heartbeat=30).study_name == "s"
    assert len(opened) == calls


@pytest.mark.slow
def test_search_writes_ordinary_runs_to_a_study_that_a_rerun_continues(data_dir: Path, tmp_path: Path) -> None:
    """Two trials: each an ordinary run (config, checkpoints, results.json) with its trial.json, in an SQLite
    study that optuna opens; trial 0 runs the defaults. A larger n_trials adds a third trial to the same study
    and leaves the first two alone; the report lists the trials, best first, with Optuna's plots."""
    sweep, study = run_search(data_dir, tmp_path, "hydra.sweeper.n_trials=2")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.trials[0].params["model.optimizer.lr"] == 1e-3  # conf/optimizer/adamw.yaml's
    for trial in study.trials:
        run = sweep / str(trial.number)
        assert (run / ".hydra" / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        results = json.loads((run / "results.json").read_text())
        assert results["val/acc_top1"] == trial.value
        assert results["overrides"]["model.optimizer.lr"] == str(trial.params["model.optimizer.lr"])
        assert json.loads((run / "trial.json").read_text())["state"] == "COMPLETE"
        assert list(trial.intermediate_values) == [0, 1]  # reported by callbacks.optuna_pruning, per epoch
    first = (sweep / "0" / "results.json").stat().st_mtime_ns

    sweep, study = run_search(data_dir, tmp_path, "hydra.sweeper.n_trials=3")
    assert len(study.trials) == 3 and study.trials[2].state == TrialState.COMPLETE
    assert (sweep / "0" / "results.json").stat().st_mtime_ns == first
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]

    proc = run_script("report", str(sweep))
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [line for line in (sweep / "report.md").read_text().splitlines() if line.startswith("| ")][1:]
    values = [float(line.split(" | ")[2]) for line in table]
    assert len(table) == 3 and values == sorted(values, reverse=True)
    assert (sweep / "history.png").stat().st_size > 0 and (sweep / "importance.png").stat().st_size > 0


@pytest.mark.slow
def test_two_searches_started_together_share_out_one_study(data_dir: Path, tmp_path: Path) -> None:
    """Two processes running the same search command at once (two terminals, a SLURM job array): n_trials
    trials in all, each run once in its own directory, with values of its own; both processes end cleanly."""
    args = search_args(data_dir, tmp_path, "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=null")
    outputs = [tmp_path / f"search{i}.out" for i in range(2)]
    procs = [start_script("train", *args, output=out.open("w")) for out in outputs]
    assert [proc.wait(timeout=600) for proc in procs] == [0, 0], [out.read_text()[-2000:] for out in outputs]
    sweep, study = study_of(tmp_path / "train" / "sweeps" / "moving_digits_lr_wd")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len({tuple(t.params.values()) for t in study.trials}) == 4
    for trial in study.trials:
        assert json.loads((sweep / str(trial.number) / "trial.json").read_text())["number"] == trial.number
    ran = [len(re.findall(r"trial \d+ complete", out.read_text())) for out in outputs]
    assert sum(ran) == 4, ran


@pytest.mark.slow
def test_pruned_trial_stops_and_is_marked_pruned(data_dir: Path, tmp_path: Path) -> None:
    """A pruner that prunes at the first report: the trial stops after epoch 0 and still finishes as a run."""
    sweep, study = run_search(data_dir, tmp_path, "hydra.sweeper.n_trials=1", *PRUNE_ALL)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
    assert json.loads((sweep / "0" / "trial.json").read_text())["pruned_at_epoch"] == 0
    assert (sweep / "0" / "results.json").is_file()
    assert "trial 0 pruned after epoch 0" in (sweep / "0" / "train.log").read_text()
    assert run_script("report", str(sweep)).returncode == 0
    assert "| 0 | pruned (epoch 0) |" in (sweep / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_stopped_search_continues_its_trial_with_the_same_command(
    data_dir: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """Stopped (SIGTERM) or killed (SIGKILL, no heartbeat any more) in trial 1 of 2: the same command runs that
    trial again, with its values, in its directory, and ends with two finished trials."""
    marker = tmp_path / "paused"
    pause = ["+callbacks.pause._target_=helpers.PauseAt", "+callbacks.pause.step=2", "+callbacks.pause.job=1"]
    args = search_args(data_dir, tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=1", *pause)
    args.append(f"+callbacks.pause.marker={marker}")
    with (tmp_path / "search.out").open("w") as out:
        proc = start_script("train", *args, output=out)
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "search.out").read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(stop)
        proc.wait(timeout=120)
    sweep, study = study_of(tmp_path / "train" / "sweeps" / "moving_digits_lr_wd")
    stopped = study.trials[1]
    assert stopped.state == (TrialState.FAIL if stop == signal.SIGTERM else TrialState.RUNNING)
    time.sleep(3)  # two heartbeat intervals: the killed trial's heartbeat is stale

    proc = run_script("train", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sweep, study = study_of(sweep)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[2].params == stopped.params
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]  # the retry ran in trial 1's
    assert json.loads((sweep / "1" / "trial.json").read_text())["number"] == 2


@pytest.mark.slow
def test_ddp_trial_runs_once_and_all_processes_stop_when_pruned(data_dir: Path, tmp_path: Path) -> None:
    """trainer=ddp: the trial runs once, on two processes (vivit.multirun's child process), and the pruner's
    decision on rank 0 stops both."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    sweep, study = run_search(data_dir, tmp_path, "hydra.sweeper.n_trials=1", *ddp, *PRUNE_ALL)
    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
    log = (sweep / "0" / "train.log").read_text()
    assert log.count("x 2 processes") == 2 and "GLOBAL_RANK: 1" in log
    assert json.loads((sweep / "0" / "results.json").read_text())["axes"]["model"] == "factorised_encoder"


def test_report_of_a_plain_sweep_is_unchanged(tmp_path: Path) -> None:
    """Without search.json, src/report.py reports the directory as a sweep (vivit.report)."""
    run = tmp_path / "0"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"overrides": {"seed": "1"}, "test/acc_top1": 0.5}))
    proc = run_script("report", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "report.png").is_file() and not (tmp_path / "history.png").exists()
