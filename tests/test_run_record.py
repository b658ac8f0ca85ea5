"""A run's record: run directories that two runs never share, resumes that keep the run's saved config and
refuse to change its model or data, checkpoint files that are not checkpoints, a full disk, Ctrl-C, nothing
written by a command that fails its checks, and paths relative to the project root."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from helpers import CONF, ROOT, TINY_DATA, TINY_NET, compose_config, run_script, start_script
from test_fault_tolerance import start_train
from vivit.checkpoints import load_checkpoint
from vivit.resume import check_resume, with_run_overrides
from vivit.run_directory import lock_run_directory
from vivit.trainer import interrupt_as_stop_signal

TRAIN = [*TINY_DATA, *TINY_NET, "callbacks.progress_bar.refresh_rate=0"]


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` by its path, with a hash of its content."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    return {str(p.relative_to(directory)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def saved_checkpoint(path: Path, **content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(64)}, **content}, path)
    return path


def damaged(path: Path, kind: str) -> Path:
    """``path`` made into a text file (``text``) or cut to half its bytes (``half``)."""
    if kind == "text":
        path.write_text("epoch 3, accuracy 0.71\n")
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def run_record(run_dir: Path, *overrides: str) -> None:
    """A run directory as src/train.py leaves it (its .hydra/ record and a last.ckpt), without training."""
    cfg = compose_config(overrides=[*TINY_DATA, *TINY_NET, *overrides], output_dir=run_dir)
    record = run_dir / ".hydra"
    record.mkdir(parents=True)
    OmegaConf.save(cfg, record / "config.yaml")
    OmegaConf.save({"hydra": HydraConfig.get()}, record / "hydra.yaml")
    (record / "overrides.yaml").write_text(yaml.safe_dump([*TINY_DATA, *TINY_NET, *overrides]))
    saved_checkpoint(run_dir / "checkpoints" / "last.ckpt")


def resume_config(run_dir: Path, *overrides: str):
    """The config of ``src/train.py resume=<run_dir> overrides...``, composed as the command line would be."""
    args = with_run_overrides([f"resume={run_dir}", *overrides])
    return compose_config(overrides=args, output_dir=run_dir)


# 1. Two runs, one directory.


def test_default_run_directories_of_the_same_second_differ() -> None:
    dirs = []
    for _ in range(2):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose(config_name="train", return_hydra_config=True)
        dirs.append(Path(cfg.hydra.run.dir))
        assert str(cfg.hydra.run.dir) == str(cfg.hydra.run.dir)  # resolved once: the same at every use
    assert dirs[0] != dirs[1] and dirs[0].parent == dirs[1].parent == ROOT / "logs" / "train" / "runs"


def test_a_locked_run_directory_is_refused_naming_it(tmp_path: Path) -> None:
    fd = lock_run_directory(tmp_path)
    with pytest.raises(RuntimeError, match=rf"{tmp_path} is in use by another run \(process \d+\)"):
        lock_run_directory(tmp_path)
    os.close(fd)  # as when the run ends, or is killed
    os.close(lock_run_directory(tmp_path))


@pytest.mark.slow  # runs two trainings side by side
def test_two_runs_started_together_finish_in_distinct_directories(data_dir: Path, tmp_path: Path) -> None:
    args = ["debug=fdr", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}"]
    procs = [start_script("train", *TRAIN, *args) for _ in range(2)]
    outputs = [proc.communicate(timeout=600)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    runs = sorted((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == 2 and all((run / "results.json").is_file() for run in runs)


@pytest.mark.slow
def test_a_second_run_in_a_directory_in_use_is_refused_and_changes_nothing(data_dir: Path, tmp_path: Path) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "paused"
    pause = ["+callbacks.pause._target_=helpers.PauseAt", "+callbacks.pause.step=0"]
    paths = [f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]
    first = start_train(run_dir, *paths, *pause, f"+callbacks.pause.marker={marker}")
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert first.poll() is None and time.monotonic() < deadline, "the first run ended before pausing"
        time.sleep(0.2)
    before = snapshot(run_dir)
    second = run_script("train", *TINY_DATA, *TINY_NET, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    assert second.returncode == 1
    assert f"{run_dir} is in use by another run (process {first.pid})" in second.stderr
    assert snapshot(run_dir) == before
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 143


@pytest.mark.parametrize("record", [True, False], ids=["running-job", "bare-lock"])
def test_a_multirun_job_in_a_directory_in_use_is_refused_and_changes_nothing(tmp_path: Path, record: bool) -> None:
    """Each job of a multirun locks its own directory while it runs: a job whose directory another run holds is
    refused before it trains. Hydra writes the job's record before the job can be refused; it goes aside and is
    removed, so the other run's directory is left as it was (its record included, or without one)."""
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    if record:  # as a job of another sweep leaves its directory while it runs
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("model: the other run's\n")
        (job / "train.log").write_text("the other run's log\n")
    fd = lock_run_directory(job)
    before = snapshot(job), sorted(p.name for p in job.rglob("*") if p.is_dir())
    try:
        proc = run_script(
            "train", "-m", "model=spatiotemporal", f"hydra.sweep.dir={sweep}", f"paths.log_dir={tmp_path}"
        )
    finally:
        os.close(fd)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{job} is in use by another run (process {os.getpid()})" in proc.stderr
    after = snapshot(job), sorted(p.name for p in job.rglob("*") if p.is_dir())
    if not record:  # Hydra opens the job's log before the job starts: an empty file, where none was
        assert after[0].pop("train.log") == hashlib.sha1(b"").hexdigest()
    assert after == before


@pytest.mark.parametrize(
    "sweep, message, job",
    [  # a combination (vivit.rules), a type (the schema)
        (["backbone.embed_dim=32", "backbone.num_heads=2,5"], "num_heads", "backbone.num_heads=5"),
        (["data.batch_size=8,sixteen"], "data.batch_size='sixteen': expected an integer", "data.batch_size=sixteen"),
    ],
)
def test_a_sweep_with_a_bad_job_fails_before_writing_anything(tmp_path: Path, sweep, message, job) -> None:
    """Every job's config is composed and checked before the sweep writes anything: one line, naming the job."""
    proc = run_script("train", "-m", *sweep, f"paths.log_dir={tmp_path}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert message in line and line.endswith(f"(job #1: {job})")
    assert list(tmp_path.iterdir()) == []


# 2. resume= keeps the run's record and its model and data.


def test_resume_refuses_overrides_that_change_model_or_data(tmp_path: Path) -> None:
    run_record(tmp_path, "model=factorised_encoder")
    for named in ("model=spatiotemporal", "data.num_frames=8", "backbone.embed_dim=64"):
        with pytest.raises(ValueError, match=rf"resume={tmp_path}: {named} would change the run's model or data"):
            check_resume(resume_config(tmp_path, named))
    check_resume(resume_config(tmp_path, "trainer.max_epochs=5", "data.num_workers=1"))  # how it runs: allowed


def test_a_run_recorded_with_the_earlier_activation_checkpointing_key_resumes(tmp_path: Path) -> None:
    run_record(tmp_path)
    record = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    del record.model.net["activation_checkpointing"]  # the layout before model.net.activation_checkpointing
    record.model.activation_checkpointing = False
    OmegaConf.save(record, tmp_path / ".hydra" / "config.yaml")
    check_resume(resume_config(tmp_path, "model.net.activation_checkpointing=true"))  # how it runs: allowed


def test_resume_puts_the_run_s_overrides_first(tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["model=spatiotemporal", "trainer.max_epochs=2", "ckpt_path=/a.ckpt", "+tags=[x]"])
    )
    args = with_run_overrides([f"resume={tmp_path}", "trainer.max_epochs=3", "tags=[y]"])
    assert args == ["model=spatiotemporal", f"resume={tmp_path}", "trainer.max_epochs=3", "tags=[y]"]
    assert with_run_overrides(["trainer.max_epochs=3"]) == ["trainer.max_epochs=3"]  # no resume: unchanged


@pytest.mark.slow  # three process starts and two short trainings
def test_resume_extends_a_finished_run_and_never_rewrites_its_record(data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    paths = [f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]
    first = run_script("train", *TINY_DATA, *TINY_NET, "trainer.max_epochs=1", *paths)
    assert first.returncode == 0, first.stderr[-3000:]
    record = snapshot(run_dir / ".hydra")

    before = snapshot(run_dir)
    refused = run_script("train", f"resume={run_dir}", "model=spatiotemporal")
    assert refused.returncode == 1
    assert f"resume={run_dir}: model=spatiotemporal would change the run's model or data" in refused.stderr
    assert snapshot(run_dir) == before  # not even a log line

    again = run_script("train", f"resume={run_dir}")  # its own overrides: trainer.max_epochs=1, done
    output = again.stdout + again.stderr
    assert again.returncode == 0 and "this run has finished 1 epochs, skipping it" in output
    assert f"(to train it longer: resume={run_dir} trainer.max_epochs=<more than 1>)" in output

    longer = run_script("train", f"resume={run_dir}", "trainer.max_epochs=2")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    assert {k: v for k, v in snapshot(run_dir / ".hydra").items() if not k.startswith("resumed")} == record
    overrides = (run_dir / ".hydra" / "resumed").rglob("overrides.yaml")
    (resumed,) = [p for p in overrides if "max_epochs=2" in p.read_text()]
    assert "resume=" in resumed.read_text()


# 4. Files that are not checkpoints.


@pytest.mark.parametrize("kind", ["text", "half"])
def test_a_file_that_is_not_a_checkpoint_is_named_in_one_line(kind: str, tmp_path: Path) -> None:
    path = damaged(saved_checkpoint(tmp_path / "model.ckpt"), kind)
    what = "is not a checkpoint (text" if kind == "text" else "is damaged: a zip archive cut short"
    with pytest.raises(ValueError, match=re.escape(f"ckpt_path='{path}' {what}")) as error:  # eval, export, predict
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    for script in ("train", "eval", "export", "predict"):  # before torch is imported, and nothing written
        args = [f"ckpt_path={path}", f"hydra.run.dir={tmp_path / script}"]
        proc = run_script(script, *args, *(["video=x.mp4"] if script == "predict" else []))
        assert proc.returncode == 1 and f"ckpt_path='{path}' {what}" in proc.stderr, (script, proc.stderr[-2000:])
        assert not (tmp_path / script).exists()


def test_damage_that_only_torch_finds_is_named_in_one_line(tmp_path: Path) -> None:
    """A whole zip archive whose pickled data is corrupted, and one that holds a pickled callable."""
    path = saved_checkpoint(tmp_path / "corrupt.ckpt")
    with zipfile.ZipFile(path) as archive:
        (info,) = [i for i in archive.infolist() if i.filename.endswith("data.pkl")]
    content = bytearray(path.read_bytes())
    header = info.header_offset  # the local header: 30 bytes, then the name and the extra field (their lengths)
    start = header + 30 + int.from_bytes(content[header + 26 : header + 28], "little")
    start += int.from_bytes(content[header + 28 : header + 30], "little") + 2  # past the pickle's protocol
    content[start : start + 16] = b"\xff" * 16
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"ckpt_path='{path}' is damaged: its pickled data cannot be read")):
        load_checkpoint(path)
    path = saved_checkpoint(tmp_path / "callable.ckpt", hook=print)
    with pytest.raises(ValueError, match=re.escape(f"ckpt_path='{path}' holds print: only tensors and values load")):
        load_checkpoint(path)


def test_resume_names_a_damaged_newest_checkpoint_and_offers_the_previous_good_one(tmp_path: Path) -> None:
    run_record(tmp_path)
    good = saved_checkpoint(tmp_path / "checkpoints" / "epoch_000.ckpt")
    newest = tmp_path / "checkpoints" / "last.ckpt"
    damaged(newest, "half")
    with pytest.raises(ValueError) as error:
        check_resume(resume_config(tmp_path))
    assert str(error.value) == (
        f"resume={tmp_path}: its newest checkpoint {newest} is damaged: a zip archive cut short or corrupted "
        f"({newest.stat().st_size} bytes, no readable directory); the previous good one is {good}: continue "
        f"from it with resume={tmp_path} ckpt_path={good}"
    )
    check_resume(resume_config(tmp_path, f"ckpt_path={good}"))  # the offered command passes
    damaged(good, "text")
    with pytest.raises(ValueError, match="no other checkpoint in it is whole"):
        check_resume(resume_config(tmp_path))


# 11. A full disk.


def test_a_full_disk_names_the_checkpoint_and_keeps_the_earlier_one(tmp_path: Path) -> None:
    """As `ulimit -f`: the second, larger checkpoint does not fit."""
    script = """
import resource, sys, torch
from pathlib import Path
from vivit.training.checkpoint_io import AtomicCheckpointIO
path, io = Path(sys.argv[1]), AtomicCheckpointIO()
io.save_checkpoint({"step": 1}, path)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
io.save_checkpoint({"step": 2, "w": torch.zeros(1 << 20)}, path)
"""
    path = tmp_path / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"OSError: [Errno 27] no space left writing {path} (File too large)"
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


# 3. Ctrl-C (the end-to-end tests are those of SIGTERM, in test_fault_tolerance.py).


def test_ctrl_c_while_fitting_is_a_stop_signal_and_a_second_aborts() -> None:
    stops = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stops.append(True))  # as Lightning's handler while fitting
    try:
        with interrupt_as_stop_signal() as interrupted:
            signal.raise_signal(signal.SIGINT)
            assert stops == [True] and interrupted == [True]
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
            assert stops == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


CHILD = """
import pathlib, signal, sys, time
got = []
signal.signal(signal.SIGINT, lambda *_: got.append(1))
pathlib.Path(sys.argv[1]).write_text("ready")
deadline = time.monotonic() + 60
while not got and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(1)  # a second Ctrl-C would come meanwhile
pathlib.Path(sys.argv[1]).write_text(f"Ctrl-C {len(got)}x, saved")
sys.exit(130)
"""
PARENT = "import sys; from vivit.multirun import run_child; run_child([sys.executable, *sys.argv[1:]], '.', None)"


def test_ctrl_c_in_a_multirun_parent_reaches_its_child_once_and_exits_130(tmp_path: Path) -> None:
    """A DDP job of a multirun runs in a child process (vivit.multirun). Ctrl-C in the terminal (SIGINT to the
    foreground process group: the parent's) reaches the child once, through the parent, which waits for it to
    save and stop, then exits with its status 130, without a traceback."""
    (tmp_path / "child.py").write_text(CHILD)
    marker = tmp_path / "marker"
    command = [sys.executable, "-c", PARENT, str(tmp_path / "child.py"), str(marker)]
    parent = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert parent.poll() is None and time.monotonic() < deadline, parent.stderr.read()
        time.sleep(0.05)
    os.killpg(parent.pid, signal.SIGINT)
    assert parent.wait(timeout=60) == 130
    assert parent.stderr.read() == "" and marker.read_text() == "Ctrl-C 1x, saved"


# 13. Nothing written by a command that fails its checks.


@pytest.mark.parametrize("override", ["data.batch_size=sixteen", "resume=<tmp>/missing", "model.net.num_heads=5"])
def test_a_command_that_fails_its_checks_writes_nothing(override: str, data_dir: Path, tmp_path: Path) -> None:
    override = override.replace("<tmp>", str(tmp_path))
    proc = run_script("train", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}", override)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # torch's imports: seconds
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.optimizer.lr=-1", "optimizer (torch.optim.AdamW): Invalid learning rate: -1"),
        ("data=ssv2 data.root=<tmp>/root", "data.root=<tmp>/root: annotation file not found"),  # a stray file in it
    ],
)
def test_a_run_that_fails_while_being_built_answers_in_one_line_and_leaves_no_directory(
    override: str, message: str, data_dir: Path, tmp_path: Path
) -> None:
    override, message = override.replace("<tmp>", str(tmp_path)), message.replace("<tmp>", str(tmp_path))
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "notes.txt").write_text("not a dataset")  # a root with files: left to the data module
    args = ["train", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}", *override.split()]
    proc = run_script(*args)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
    assert list((tmp_path / "logs" / "train" / "runs").iterdir()) == []  # created, then removed
    if override.startswith("model."):  # the whole story when asked for
        proc = run_script(*args, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
        assert proc.returncode == 1 and "Traceback" in proc.stderr and message in proc.stderr


def test_only_the_package_s_own_checks_answer_in_one_line(monkeypatch) -> None:
    """A ValueError or FileNotFoundError raised by a ``raise`` in src/vivit (through Hydra's instantiate too) is
    answered by its message; a library's error and a bug keep their stack trace, as does all with
    HYDRA_FULL_ERROR=1."""
    from hydra.utils import instantiate

    from vivit.run_directory import PACKAGE_DIR, check_message

    def raised(call) -> BaseException:
        try:
            call()
        except Exception as error:  # noqa: BLE001
            return error
        raise AssertionError("nothing raised")

    ours = raised(lambda: instantiate({"_target_": "vivit.rules.check_heads", "embed_dim": 32, "num_heads": 5}))
    assert check_message(ours) == str(ours.__cause__) and "num_heads" in check_message(ours)
    assert check_message(raised(lambda: torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=-1))) is None
    bug = compile("int('x')", str(PACKAGE_DIR / "anywhere.py"), "exec")  # not a raise statement
    assert check_message(raised(lambda: exec(bug))) is None
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    assert check_message(ours) is None


# 15. Paths relative to the project root.


def test_paths_are_under_the_project_root_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(overrides=["model=factorised_encoder"])
    assert (cfg.paths.data_dir, cfg.paths.log_dir) == (str(ROOT / "data"), str(ROOT / "logs"))
    cfg = compose_config(overrides=["paths.root_dir=."])
    assert Path(cfg.paths.log_dir).resolve() == tmp_path / "logs"
