"""Fault tolerance: exact resume after SIGKILL, SIGTERM/SIGUSR1 preemption, atomic checkpoints, non-finite
losses, the same training on one and two processes, and config errors that fail before any training."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from helpers import TINY_DATA, TINY_NET, run_script, start_script
from vivit.data.resumable import EpochSampler, ResumableLoader, SeededClips
from vivit.pipeline import train
from vivit.training.checkpoint_io import AtomicCheckpointIO
from vivit.training.loggers import ContinuedCSVLogger

# 48 clips at batch 8: 6 steps per epoch. last.ckpt every 4 steps: steps 4, 8 and 16 fall inside an epoch.
QUIET_STEPS = ["callbacks.fault_tolerance.every_n_train_steps=4", "callbacks.progress_bar.refresh_rate=0"]
RUN = [*TINY_DATA, *TINY_NET, "trainer.max_epochs=3", "trainer.deterministic=true", *QUIET_STEPS]


def start_train(run_dir: Path, *args: str) -> subprocess.Popen:
    return start_script("train", *RUN, *args, output=(run_dir.parent / f"{run_dir.name}.out").open("a"))


def finish(proc: subprocess.Popen, run_dir: Path) -> int:
    code = proc.wait(timeout=600)
    assert code in (0, 130, 143), (run_dir.parent / f"{run_dir.name}.out").read_text()[-3000:]
    return code


def pause_and(run_dir: Path, data_dir: Path, send: signal.Signals, *args: str) -> subprocess.Popen:
    """Starts a run in ``run_dir``, waits until it pauses at the start of step 9 (epoch 1, batch 3; its last
    checkpoint is from step 8) and sends it ``send``."""
    marker = run_dir.parent / f"{run_dir.name}.paused"
    pause = ["+callbacks.pause._target_=helpers.PauseAt", "+callbacks.pause.step=9"]
    paths = [f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]
    proc = start_train(run_dir, *paths, *pause, f"+callbacks.pause.marker={marker}", *args)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before pausing"
        time.sleep(0.2)
    proc.send_signal(send)
    return proc


@pytest.fixture(scope="module")
def reference(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("fault") / "reference"
    finish(start_train(run_dir, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"), run_dir)
    return run_dir


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same final weights (bit for bit) and metrics as the uninterrupted run."""
    ours, theirs = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (run_dir, reference))
    assert ours["global_step"] == theirs["global_step"] == 18
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (run_dir, reference))
    metrics = [k for k in theirs if k.startswith(("train/", "val/", "test/")) and "per_s" not in k]
    assert {"train/loss", "val/loss", "val/acc_top1", "test/loss"} <= set(metrics)
    assert {k: ours[k] for k in metrics} == {k: theirs[k] for k in metrics}
    assert csv_rows(run_dir / "csv" / "metrics.csv") == csv_rows(reference / "csv" / "metrics.csv")


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV log, without the wall-clock speed (train/clips_per_s)."""
    with path.open(newline="") as file:
        return [{k: v for k, v in row.items() if "per_s" not in k} for row in csv.DictReader(file)]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(reference: Path, data_dir: Path) -> None:
    run_dir = reference.parent / "killed"
    proc = pause_and(run_dir, data_dir, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    finish(start_train(run_dir, f"paths.data_dir={data_dir}", f"resume={run_dir}"), run_dir)
    assert_same_run(run_dir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("send", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT], ids=lambda s: s.name)  # INT: Ctrl-C
def test_stop_signal_saves_exits_and_resumes_exactly(send: signal.Signals, reference: Path, data_dir: Path) -> None:
    run_dir = reference.parent / f"stopped_{send.name}"
    proc = pause_and(run_dir, data_dir, send)
    assert proc.wait(timeout=120) == (130 if send == signal.SIGINT else 143)  # stopped cleanly, not finished
    output = (run_dir.parent / f"{run_dir.name}.out").read_text()
    assert "Traceback" not in output and "resume=" in output
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    # as a requeued SLURM job would: the same command in a fixed directory, with ckpt_path=last
    proc = start_train(run_dir, f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}", "ckpt_path=last")
    finish(proc, run_dir)
    assert_same_run(run_dir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("send", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_stop_signal_under_ddp_saves_once_on_every_rank_and_resumes(
    send: signal.Signals, data_dir: Path, tmp_path: Path
) -> None:
    """SIGTERM or SIGINT to the main process of a 2-process ddp run (Lightning passes it on to rank 1 as SIGTERM):
    both ranks save the same step's checkpoint together, exit cleanly, and the run resumes to the end from it."""
    run_dir = tmp_path / "ddp"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    ddp += ["data.batch_size=4"]  # the global batch of 8: 6 steps per epoch, as on one process
    proc = pause_and(run_dir, data_dir, send, *ddp)
    assert proc.wait(timeout=240) == (130 if send == signal.SIGINT else 143)
    output = (run_dir.parent / f"{run_dir.name}.out").read_text()
    assert "Traceback" not in output and output.count("the run received a stop signal: saved") == 2  # 2 ranks
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    finish(start_train(run_dir, f"paths.data_dir={data_dir}", f"resume={run_dir}", *ddp), run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 18
    assert "test/acc_top1" in json.loads((run_dir / "results.json").read_text())


def sweep_jobs(sweep: Path) -> dict[int, Path]:
    """A named sweep's job directories by their temporal depth (the swept axis)."""
    return {
        OmegaConf.load(job / ".hydra" / "config.yaml").model.net.temporal_depth: job
        for job in sweep.iterdir()
        if (job / ".hydra").is_dir()
    }


@pytest.mark.slow
def test_killed_sweep_reruns_only_the_jobs_it_had_not_finished(data_dir: Path, tmp_path: Path) -> None:
    """A 3-job sweep is killed (SIGKILL) in its second job, after that job's step-8 checkpoint. The same
    command again leaves the finished job alone, resumes the second from its checkpoint to the same weights
    as an uninterrupted run of that job, and runs the third from scratch."""
    marker = tmp_path / "paused"
    sweep_args = ["sweep=table3_temporal_layers", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}"]
    sweep_args += ["model.net.temporal_depth=0,1,2", "+callbacks.pause._target_=helpers.PauseAt"]
    sweep_args += ["+callbacks.pause.step=9", "+callbacks.pause.job=1", f"+callbacks.pause.marker={marker}"]
    sweep, out = tmp_path / "train" / "sweeps" / "table3_temporal_layers", tmp_path / "sweep"
    proc = start_train(out, *sweep_args)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.out").read_text()[-3000:]
        time.sleep(0.2)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    jobs = sweep_jobs(sweep)
    assert sorted(jobs) == [0, 1]  # the third never started
    assert (jobs[0] / "results.json").is_file() and not (jobs[1] / "results.json").exists()
    assert torch.load(jobs[1] / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    first = (jobs[0] / "results.json").stat().st_mtime_ns

    finish(start_train(out, *sweep_args), out)  # the same command again (the marker stops a second pause)
    jobs = sweep_jobs(sweep)
    assert sorted(jobs) == [0, 1, 2] and all((job / "results.json").is_file() for job in jobs.values())
    assert (jobs[0] / "results.json").stat().st_mtime_ns == first
    output = (tmp_path / "sweep.out").read_text()
    assert output.count("this run has finished, skipping it") == 1
    assert "resuming from" in (jobs[1] / "train.log").read_text()
    assert "resuming from" not in (jobs[2] / "train.log").read_text()

    alone = tmp_path / "alone"  # job 1 without interruption
    finish(start_train(alone, *sweep_args[:2], f"paths.log_dir={alone}", "model.net.temporal_depth=1"), alone)
    (reference,) = sweep_jobs(alone / "train" / "sweeps" / "table3_temporal_layers").values()
    ours, theirs = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (jobs[1], reference))
    assert ours["global_step"] == theirs["global_step"] == 18
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key


@pytest.mark.slow
def test_one_and_two_processes_train_alike(tiny_cfg, tmp_path: Path) -> None:
    """The same global batch (8 = 8 x 1 = 4 x 2) gives the same weights and metrics on 1 and 2 processes."""
    common = [
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "test=false",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    one = train(tiny_cfg(*common))
    weights = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    two_dir = tmp_path / "two"
    cfg = tiny_cfg(*common, "data.batch_size=4", "trainer.devices=2", "+trainer.strategy=ddp_spawn")
    cfg.paths.output_dir = str(two_dir)
    two = train(cfg)
    for key in ("train/loss", "train/acc_top1", "val/loss", "val/acc_top1"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
    for key, value in torch.load(two_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"].items():
        torch.testing.assert_close(value, weights[key], rtol=1e-4, atol=1e-5, msg=key)


def test_last_checkpoint_is_written_at_every_epoch_end(tiny_cfg, tmp_path: Path) -> None:
    """last.ckpt holds the final step even when the last epoch does not beat the best one (learning rate 0:
    no epoch does), so that resuming and evaluating ``last.ckpt`` start from the end of the run."""
    train(
        tiny_cfg("trainer.max_epochs=2", "model.optimizer.lr=0", "test=false", "callbacks.progress_bar.refresh_rate=0")
    )
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]


def test_resumed_run_continues_its_csv_log(tiny_cfg, tmp_path: Path) -> None:
    """A run that crashes two steps after its step-8 checkpoint and is resumed (ckpt_path=last) ends with the
    CSV log of an uninterrupted run: one file, the first part's rows kept, the steps logged after the
    checkpoint not twice, and the columns that only the resumed part logs (test/) in the header."""
    run = ["trainer.max_epochs=2", "trainer.deterministic=true", "trainer.log_every_n_steps=1", *QUIET_STEPS]
    train(tiny_cfg(*run))
    cfg = tiny_cfg(*run, "+callbacks.crash._target_=helpers.CrashAt", "+callbacks.crash.step=10")
    cfg.paths.output_dir = str(tmp_path / "resumed")
    with pytest.raises(RuntimeError, match="crashed at step 10"):
        train(cfg)
    log = tmp_path / "resumed" / "csv" / "metrics.csv"
    assert max(int(row["step"]) for row in csv_rows(log)) > 8  # rows from after the checkpoint
    cfg = tiny_cfg(*run, "ckpt_path=last")
    cfg.paths.output_dir = str(tmp_path / "resumed")
    train(cfg)
    assert [p.name for p in log.parent.iterdir() if p.suffix == ".csv"] == ["metrics.csv"]
    assert "test/loss" in csv_rows(log)[0]
    assert csv_rows(log) == csv_rows(tmp_path / "csv" / "metrics.csv")


def test_csv_log_survives_until_the_resumed_run_logs(tmp_path: Path) -> None:
    """Lightning's CSV writer deletes an earlier metrics.csv when it starts (lightning 2.6): the logger writes it
    back at once, without Lightning's warning that it will be deleted, and drops the earlier rows from the
    resumed run's first step on only when that step reaches the file."""
    log = tmp_path / "csv" / "metrics.csv"
    log.parent.mkdir()
    earlier = "epoch,step,train/loss\r\n0,0,1.0\r\n0,1,0.9\r\n0,2,0.8\r\n"
    log.write_bytes(earlier.encode())
    logger = ContinuedCSVLogger(tmp_path, name="csv", version="")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logger.log_hyperparams({"seed": 1})  # starts the writer
    assert log.read_bytes() == earlier.encode()
    logger.log_metrics({"val/loss": 0.5}, step=1)
    logger.save()
    with log.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows == [
        {"epoch": "0", "step": "0", "train/loss": "1.0", "val/loss": ""},
        {"epoch": "", "step": "1", "train/loss": "", "val/loss": "0.5"},
    ]


class Draws(Dataset):
    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, float(torch.rand(()))


def test_clip_draws_depend_on_seed_epoch_and_index_only() -> None:
    clips = SeededClips(Draws(), seed=1)
    before = torch.get_rng_state()
    assert clips[(0, 3)] == clips[(0, 3)] and clips[(0, 3)] != clips[(1, 3)] != clips[(1, 4)]
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is left alone


def test_sampler_splits_the_single_process_order_and_starts_mid_epoch() -> None:
    one = EpochSampler(Draws(), 1, 0, seed=7)
    ranks = [EpochSampler(Draws(), 2, r, seed=7) for r in range(2)]
    for sampler in (one, *ranks):
        sampler.set_epoch(3)
    order = list(one)
    assert {key for r in ranks for key in r} == set(order) and [key for key in ranks[1]] == order[1::2]
    one.start = 8
    assert list(one) == order[8:] and list(one) == order  # the start applies to one pass


def test_loader_batches_are_reproducible() -> None:
    from torch.utils.data import DataLoader

    loader = ResumableLoader(DataLoader(Draws(), batch_size=4, shuffle=True, drop_last=True))
    first, again = list(loader), list(loader)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again)) and len(first) == 5


def test_atomic_checkpoint_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def killed_while_writing(obj, f, *args, **kwargs) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # stands in for the process dying mid-write

    monkeypatch.setattr(torch, "save", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    io.save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True) == {"step": 3}


POISON = ["+callbacks.poison._target_=helpers.PoisonBatch", "+callbacks.poison.step=2"]  # a NaN loss at step 2


def test_nonfinite_loss_stops_naming_the_step_and_keeps_good_weights(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg("debug=limit", "test=false", "callbacks.fault_tolerance.every_n_train_steps=1", *POISON)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss.*step 2 \(epoch 0, batch 2\)"):
        train(cfg)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2  # the state just before the bad step
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_nonfinite_loss_can_skip_the_step(tiny_cfg, tmp_path: Path) -> None:
    cfg = tiny_cfg("debug=limit", "test=false", "callbacks.loss_guard.on_nonfinite=skip", *POISON)
    metrics = train(cfg)
    assert metrics["train/skipped_steps"] == 1
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow  # a process start each (imports: seconds on a loaded machine); the error itself comes at once
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epoch=3", "max_epoch"),  # unknown key (a typo)
        ("data.batch_size=sixteen", "data.batch_size='sixteen': expected an integer"),
        ("model.optimizer.lr=fast", "model.optimizer.lr='fast': expected a number"),
        ("trainer.deterministic=maybe", "deterministic"),
        ("model.optimizer.lr=-1", "optimizer (torch.optim.AdamW): Invalid learning rate"),
        ("callbacks.loss_guard.on_nonfinite=ignore", "callbacks.loss_guard.on_nonfinite must be 'stop' or 'skip'"),
        ("ckpt_path=/no/such.ckpt", "ckpt_path='/no/such.ckpt' is not a file"),
        ("resume=<tmp>", "no checkpoints/last.ckpt or hpc_ckpt_*.ckpt in it"),
    ],
)
def test_config_errors_fail_before_training_naming_the_key(
    override: str, message: str, data_dir: Path, tmp_path: Path
) -> None:
    override = override.replace("<tmp>", str(tmp_path))
    run_dir = [] if override.startswith("resume=") else [f"hydra.run.dir={tmp_path}"]
    proc = run_script("train", *TINY_DATA, *TINY_NET, f"paths.data_dir={data_dir}", *run_dir, override, timeout=300)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "checkpoints").exists()
