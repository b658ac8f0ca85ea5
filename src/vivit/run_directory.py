"""A run's directory, claimed before Hydra writes to it, and a clear answer when a run fails its checks: a Hydra
callback (``hydra.callbacks`` in conf/hydra/default.yaml).

Hydra creates the run directory and writes its log and ``.hydra/`` record before the task function starts. This
callback runs before that: it checks the config (:func:`vivit.config.check_config`; in a multirun, the config of
every job, before the sweep writes anything), so that a command that fails its checks leaves nothing behind, and
it locks the directory (in a multirun, each job's while it runs), so that a second run in a directory that a run
is using is refused before it changes anything there. The lock is the kernel's (``flock``): a killed run releases
it, and the same command can resume at once.

A run that fails a check that needs torch (``model.optimizer.lr=-1``, a ``data.root`` without the dataset) ends
with the check's message alone, in one line (``HYDRA_FULL_ERROR=1``: with the stack trace), and removes the
directory it created if nothing but Hydra's record is in it. Any other error keeps its stack trace.
"""

from __future__ import annotations

import copy
import fcntl
import os
import shutil
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

import vivit
from vivit.config import check_config, composition_error
from vivit.multirun import LOCKED_BY_PARENT_ENV

LOCK_FILE = ".lock"  # in the run directory: the id of the process that holds it
CONFIG_TREE = "config_tree.log"  # in the run directory: the whole config, resolved (vivit.console)
PACKAGE_DIR = Path(vivit.__file__).resolve().parent


class ClaimRunDirectory(Callback):
    def __init__(self) -> None:
        self.lock: int | None = None  # the locked file, open until the run (or the multirun job) ends
        self.created: Path | None = None  # the run directory, when this run created it

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with read_write(config.hydra), open_dict(config.hydra):  # resolved once: the time and suffix stay as locked
            config.hydra.run.dir = str(config.hydra.run.dir)
        HydraConfig.instance().set_config(config)  # as the run will see it (Hydra sets it only after this)
        check_config(task_config(config))  # a mistake: SystemExit, which Hydra passes on
        run_dir = Path(config.hydra.run.dir)
        if not started_by_another_process() and os.environ.get(LOCKED_BY_PARENT_ENV) != str(run_dir):
            self.created = None if run_dir.exists() else run_dir
            self.lock = claim(run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Every job's config passes the checks before the sweep writes anything."""
        from hydra.core.global_hydra import GlobalHydra

        jobs = sweep_jobs(config)
        for number, overrides in enumerate(jobs):
            swept = [o for o in overrides if any(o not in other for other in jobs)]  # what this job varies
            where = f" (job #{number}: {' '.join(swept)})" if swept else ""
            try:
                job = GlobalHydra.instance().config_loader().load_sweep_config(config, overrides)
            except ConfigCompositionException as error:  # data.batch_size=8,sixteen: the schema refuses a value
                raise SystemExit(
                    composition_error(error, config.hydra.job.config_name, list(overrides)) + where
                ) from None
            HydraConfig.instance().set_config(job)
            try:
                check_config(task_config(job))
            except SystemExit as error:
                raise SystemExit(f"{error}{where}") from None
        HydraConfig.instance().set_config(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A multirun's job locks its directory here, after Hydra has written the job's record there: into
        ``.hydra/resumed/<time>`` when another run holds the directory (:func:`vivit.config.record_dir`), which
        a refused job removes, so that the other run's directory is left as it was."""
        if config.hydra.mode != RunMode.MULTIRUN or started_by_another_process():
            return
        run_dir = Path(config.hydra.runtime.output_dir)
        try:
            self.lock = lock_run_directory(run_dir)
        except RuntimeError as error:
            if (subdir := str(config.hydra.output_subdir)).startswith(".hydra/resumed/"):
                shutil.rmtree(run_dir / subdir, ignore_errors=True)
                for empty in (run_dir / ".hydra/resumed", run_dir / ".hydra"):
                    if empty.is_dir() and not any(empty.iterdir()):
                        empty.rmdir()
            raise SystemExit(str(error)) from None

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and self.lock is not None:  # the sweep's next job takes its own
            os.close(self.lock)
            self.lock = None

    def on_run_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        record = {".hydra", LOCK_FILE, CONFIG_TREE, f"{config.task_name}.log"}
        if self.created is not None and {p.name for p in self.created.iterdir()} <= record:
            shutil.rmtree(self.created)  # failed while being built: nothing of the run was written
        # hydra-core 1.3 (pinned): the public return_value prints "Error executing job ..." before it raises
        if (message := check_message(job_return._return_value)) is not None:
            raise SystemExit(message)  # else Hydra raises the error itself, with its stack trace


def check_message(error: BaseException) -> str | None:
    """The message of ``error`` when a check of this package raised it: a ``ValueError`` or
    ``FileNotFoundError`` (or a subclass) raised by a ``raise`` statement in ``src/vivit`` (through Hydra's
    ``instantiate``: the error it wraps). None for anything else, and with ``HYDRA_FULL_ERROR=1``."""
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(error, (ValueError, FileNotFoundError)):
        return None
    frames = traceback.extract_tb(error.__traceback__)
    if not frames or not Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR):
        return None
    return str(error) if (frames[-1].line or "").startswith("raise") else None


def task_config(config: DictConfig) -> DictConfig:
    """``config`` as the task function sees it: without its hydra node."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The overrides of each job of a multirun, as its sweeper will launch them; the sweep's own overrides
    alone (one job to check) for a sweeper that decides its jobs as it goes (an optimiser)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import get_class

    overrides = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    overrides += list(config.hydra.overrides.task)
    parsed = OverridesParser.create(GlobalHydra.instance().config_loader()).parse_overrides(overrides)
    split = getattr(get_class(config.hydra.sweeper._target_), "split_arguments", None)  # BasicSweeper's
    if split is None:
        return [[o.input_line for o in parsed if not o.is_sweep_override()]]
    return split(parsed, None)[0]


def started_by_another_process() -> bool:
    """True in the processes that a multi-process run starts besides the first (DDP's other ranks, SLURM tasks,
    torchrun workers): they share the first one's directory."""
    return any(os.environ.get(key, "0") != "0" for key in ("LOCAL_RANK", "RANK", "SLURM_PROCID"))


def claim(run_dir: Path) -> int:
    """:func:`lock_run_directory`, ending the command with its message when another run holds the directory."""
    try:
        return lock_run_directory(run_dir)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None


def in_use_by_another(run_dir: str | Path) -> bool:
    """Whether another process holds ``run_dir``'s lock (:func:`lock_run_directory`); changes nothing there."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no directory or no lock file: no run has claimed it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return os.read(fd, 32).decode(errors="replace").strip() != str(os.getpid())
    finally:
        os.close(fd)


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
