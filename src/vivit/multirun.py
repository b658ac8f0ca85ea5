"""A multirun job whose trainer starts processes of its own (``-m ... trainer=ddp``) runs in a child process.

Lightning starts the other processes of a DDP run by running the command line again, which in a multirun is
the whole sweep: every extra process would run all of the sweep's jobs. Such a job therefore runs as a single
run of its own (:func:`run_job_in_subprocess`), in its job directory; the parent passes signals on to it.
Imports no torch.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)

SWEEP_GROUP_ENV = "VIVIT_SWEEP_GROUP"  # the sweep name, for a multirun job run in a child process
LOCKED_BY_PARENT_ENV = "VIVIT_RUN_DIR_LOCKED"  # the job directory, which the parent has locked (vivit.run_directory)
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)  # SIGHUP: a closed terminal
TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"  # src/train.py, beside the package
# Strategies whose launcher starts the other processes by running the command line again.
RELAUNCHING_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false", "fsdp")


def sweep_name() -> str | None:
    """The multirun's directory name (shared by all its jobs), or None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if os.environ.get(SWEEP_GROUP_ENV):
        return os.environ[SWEEP_GROUP_ENV]
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def multirun_job_launches_processes(cfg: DictConfig) -> bool:
    """True for a multirun job whose trainer would start its other processes by re-running the command.
    Processes that a cluster starts (SLURM tasks, torchrun) and ``ddp_spawn`` are not affected."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    if "LOCAL_RANK" in os.environ or SLURMEnvironment.detect() or TorchElasticEnvironment.detect():
        return False
    return cfg.trainer.get("strategy") in RELAUNCHING_STRATEGIES and cfg.trainer.get("devices") != 1


def run_job_in_subprocess(cfg: DictConfig) -> dict[str, float]:
    """Runs this multirun job as a single run of its own, in a child process, and returns its metrics.

    The child gets only this job's overrides, in run mode, with this job's directory as its run directory, so
    the processes its trainer starts (from the child's command line) run this job, once, in this directory.
    A stopped child stops the sweep (:func:`run_child`).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    from vivit.resume import finished_metrics

    hydra_cfg = HydraConfig.get()
    out = hydra_cfg.runtime.output_dir
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),  # not sys.argv[0]: under a launcher such as submitit's, that is the launcher's
        *hydra_cfg.overrides.task,
        "hydra.mode=RUN",
        f"hydra.run.dir={out}",
        "hydra.output_subdir=null",  # this job's .hydra/ is already written
    ]
    log.info("multirun job with %s: running it in a child process: %s", cfg.trainer.strategy, " ".join(command))
    env = {**os.environ, SWEEP_GROUP_ENV: sweep_name() or "", LOCKED_BY_PARENT_ENV: str(out)}
    code = run_child(command, cwd=get_original_cwd(), env=env)
    if code != 0:
        raise RuntimeError(f"the job in {out} failed (exit code {code}): see its log there")
    metrics = finished_metrics(Path(out))
    if metrics is None:
        raise RuntimeError(f"the job in {out} finished without writing its results")
    return metrics


def run_child(command: list[str], cwd: str | Path, env: dict[str, str]) -> int:
    """Runs ``command`` and returns its exit status, passing on every signal of :data:`FORWARDED_SIGNALS` that
    this process receives, once each. The child runs in a session of its own, so that a Ctrl-C in the terminal
    reaches it once, through this process (in the terminal's group it would come twice: a second Ctrl-C aborts).
    A child stopped by a signal (exit status 130 or 143: it saved ``last.ckpt`` and said how to continue) ends
    this process with the same status."""
    child = subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True)
    previous = {sig: signal.signal(sig, lambda signum, _: child.send_signal(signum)) for sig in FORWARDED_SIGNALS}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code in (130, 143):
        raise SystemExit(code)
    return code
