"""A run's directory, claimed before Hydra writes to it: a Hydra callback (``hydra.callbacks`` in
conf/hydra/default.yaml); and the command line that continues a run (``resume=<run dir>``).

Hydra creates the run directory and writes its log and ``.hydra/`` record before the task function starts. This
callback runs before that: it checks the config (:func:`vivit.config.check_config`), so that a command that fails
its checks leaves nothing behind, and it locks the directory for as long as the process lives, so that a second
run in a directory that a run is using is refused before it changes anything there. A run that fails while it is
built (checks that need torch) removes the directory it created, if nothing but Hydra's record is in it. The lock
is the kernel's (``flock``): a killed run releases it, and the same command can resume at once.
"""

from __future__ import annotations

import copy
import fcntl
import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from vivit.config import check_config

LOCK_FILE = ".lock"  # in the run directory: the id of the process that holds it


class ClaimRunDirectory(Callback):
    def __init__(self) -> None:
        self.lock: int | None = None  # the locked file, open until the process ends
        self.created: Path | None = None  # the run directory, when this run created it

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with read_write(config.hydra), open_dict(config.hydra):  # resolved once: the time and suffix stay as locked
            config.hydra.run.dir = str(config.hydra.run.dir)
        HydraConfig.instance().set_config(config)  # as the run will see it (Hydra sets it only after this)
        task = copy.deepcopy(config)  # as the run will see it: without the hydra node
        with read_write(task), open_dict(task):
            del task["hydra"]
        check_config(task)  # a mistake: SystemExit, which Hydra passes on (it turns exceptions into warnings)
        if not started_by_another_process():
            run_dir = Path(config.hydra.run.dir)
            self.created = None if run_dir.exists() else run_dir
            try:
                self.lock = lock_run_directory(run_dir)
            except RuntimeError as error:
                raise SystemExit(str(error)) from None

    def on_run_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A run that failed while it was being built (``model.optimizer.lr=-1``, a ``data.root`` without the
        dataset), before anything but Hydra's record and log was written, leaves no directory behind."""
        if job_return.status != JobStatus.FAILED or self.created is None:
            return
        if {p.name for p in self.created.iterdir()} <= {".hydra", LOCK_FILE, f"{config.task_name}.log"}:
            shutil.rmtree(self.created)


def started_by_another_process() -> bool:
    """True in the processes that a multi-process run starts besides the first (DDP's other ranks, SLURM tasks,
    torchrun workers): they share the first one's directory."""
    return any(os.environ.get(key, "0") != "0" for key in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


def lock_run_directory(run_dir: Path) -> int:
    """Locks ``run_dir`` (created if absent) for this process; fails naming it when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RuntimeError(
            f"{run_dir} is in use by another run (process {holder}): wait for it to end, or give this run "
            "another directory (hydra.run.dir=...)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def with_run_overrides(args: list[str]) -> list[str]:
    """The command-line arguments of ``src/train.py resume=<run dir> ...`` with the run's own overrides (its
    ``.hydra/overrides.yaml``) in front: ``resume=<run dir>`` alone continues the run as it was started, and an
    override given again replaces the run's (``trainer.max_epochs=<more>`` extends it; one that changes the model
    or data is refused, :func:`vivit.config.check_resume_keeps_the_run`). Other arguments are returned as given."""
    resume = next((arg.split("=", 1)[1] for arg in args if arg.startswith("resume=")), "")
    saved = Path(resume) / ".hydra" / "overrides.yaml"
    if not resume or not saved.is_file():
        return args
    given = {override_key(arg) for arg in args if "=" in arg and not arg.startswith("-")}
    own = [arg for arg in yaml.safe_load(saved.read_text()) or [] if override_key(arg) not in {*given, "ckpt_path"}]
    return [*own, *args]


def override_key(override: str) -> str:
    """``+callbacks.x._target_=...`` -> ``callbacks.x._target_``."""
    return override.split("=", 1)[0].lstrip("+~")
