"""Where a run starts: a finished run is skipped, an unfinished one goes on from its newest checkpoint.

``resume=<run dir>`` continues a run in its own directory, with the run's own overrides first
(:func:`with_run_overrides`, src/train.py); it may change how the run goes on (``trainer.max_epochs=<more>``
extends a finished run) but not its model or data (:func:`check_resume_keeps_the_run`). ``ckpt_path=last``
continues from this run directory's newest checkpoint, if any (a requeued job, a re-run sweep). The checks
(:func:`check_resume`, :func:`check_checkpoint`) run before torch is imported (``vivit.config.check_config``):
this module imports no torch; :func:`epochs_trained` imports it when it reads a checkpoint.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint that fitting starts from (:func:`check_resume` has checked it).

    ``resume=<run dir>``: that directory's newest checkpoint, or ``ckpt_path`` when given. ``ckpt_path=last``:
    this run directory's newest checkpoint, or none (the run starts from scratch). Otherwise ``ckpt_path``
    (``best``, ``hpc``: Lightning's).
    """
    ckpt_path = checkpoint_to_resume(cfg)
    if ckpt_path is None and cfg.get("ckpt_path") == "last":
        log.info("ckpt_path=last: no checkpoint in %s yet, starting from scratch", cfg.paths.output_dir)
    if ckpt_path not in (None, "best", "hpc"):
        log.info("resuming from %s", ckpt_path)
    return ckpt_path


def checkpoint_to_resume(cfg: DictConfig) -> str | None:
    """:func:`resume_checkpoint`'s answer, found without saying so."""
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume") and ckpt_path in (None, "last"):
        return str(newest_checkpoint(Path(cfg.resume)))
    if ckpt_path == "last":
        newest = newest_checkpoint(Path(cfg.paths.output_dir))
        return None if newest is None else str(newest)
    return ckpt_path


def finished_run(cfg: DictConfig) -> dict[str, float] | None:
    """The stored metrics of a run that has finished (its directory holds ``results.json``): it is skipped, so
    that re-running a sweep skips its done jobs. None when the run is to go on: not finished, or
    ``resume=<finished run>`` with a larger ``trainer.max_epochs`` than it has trained."""
    from vivit.report import RESULTS_FILE

    done = Path(cfg.paths.output_dir) / RESULTS_FILE
    metrics = finished_metrics(done.parent)
    if metrics is None:
        return None
    if not cfg.get("resume"):
        log.info("%s exists: this run has finished, skipping it", done)
        return metrics
    epochs, max_epochs = epochs_trained(checkpoint_to_resume(cfg)), cfg.trainer.get("max_epochs")
    if max_epochs is None or max_epochs < 0 or max_epochs <= epochs:
        hint = f"to train it longer: resume={cfg.resume} trainer.max_epochs=<more than {epochs}>"
        log.info("%s exists: this run has finished %d epochs, skipping it (%s)", done, epochs, hint)
        return metrics
    log.info("the finished run %s goes on from %d to %d epochs", cfg.resume, epochs, max_epochs)
    return None


def finished_metrics(run_dir: Path) -> dict[str, float] | None:
    """The metrics stored in a finished run's ``results.json``, or None when the run has not finished."""
    from vivit.report import RESULTS_FILE

    done = run_dir / RESULTS_FILE
    if not done.is_file():
        return None
    return {k: v for k, v in json.loads(done.read_text()).items() if isinstance(v, float)}


def epochs_trained(path: str) -> int:
    """The epochs that a checkpoint has finished."""
    from vivit.training.checkpoint_io import read_checkpoint  # torch

    checkpoint = read_checkpoint(path)
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return progress.get("processed", checkpoint.get("epoch", 0) + 1)


def with_run_overrides(args: list[str]) -> list[str]:
    """The command-line arguments of ``src/train.py resume=<run dir> ...`` with the run's own overrides (its
    ``.hydra/overrides.yaml``) in front: ``resume=<run dir>`` alone continues the run as it was started, and an
    override given again replaces the run's (``trainer.max_epochs=<more>`` extends it; one that changes the model
    or data is refused, :func:`check_resume_keeps_the_run`). Other arguments are returned as given."""
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


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The run directory's newest resumable checkpoint: ``checkpoints/last.ckpt`` or a SLURM ``hpc_ckpt_<n>.ckpt``."""
    found = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with ``path`` as a checkpoint, found without torch (from its first bytes and its zip
    directory: milliseconds), or None when it looks whole. ``torch.load`` may still find damage inside."""
    if not path.is_file():
        return "is not a file"
    with path.open("rb") as file:
        head = file.read(64)
    if head[:1] == b"\x80":  # torch's legacy format: a pickle
        return None
    if not head.startswith(b"PK\x03\x04"):
        kind = "empty" if not head else "text" if head.isascii() else "neither a zip archive nor a pickle"
        return f"is not a checkpoint ({kind}; torch.save writes a zip archive)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return f"is damaged: a zip archive cut short or corrupted ({path.stat().st_size} bytes, no readable directory)"
    if not any(name.endswith("data.pkl") for name in names):
        return "is not a checkpoint (a zip archive without the data.pkl of torch.save)"
    return None


def check_checkpoint(path: Path, key: str = "ckpt_path") -> None:
    """Fails naming ``key=path`` and what is wrong with the file (:func:`checkpoint_problem`)."""
    problem = checkpoint_problem(path)
    if problem is not None:
        error = FileNotFoundError if problem == "is not a file" else ValueError
        raise error(f"{key}={str(path)!r} {problem}")


# What a resumed run may change in model.* and data.*: how it runs, not what the checkpoint was trained on.
RESUME_MAY_CHANGE = (
    *(f"data.{key}" for key in ("root", "num_workers", "decoder", "photometric_on", "max_bad_videos")),
    *(f"data.{key}" for key in ("skip_bad_eval_videos", "test_clips", "test_crops", "eval_split")),
    "model.compile",
    "model.net.activation_checkpointing",
    "model.activation_checkpointing",  # its key before model.net.activation_checkpointing: runs recorded then resume
)


def flat_items(cfg: DictConfig, prefix: str) -> dict[str, Any]:
    """The leaves of the node ``prefix`` of ``cfg`` by their dotted keys, resolved (None where they cannot be)."""

    def keys(node: Any, key: str) -> list[str]:
        if isinstance(node, dict) and node:
            return [k for name, child in node.items() for k in keys(child, f"{key}.{name}")]
        return [key]

    node = OmegaConf.select(cfg, prefix, default=None)
    tree = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    return {key: OmegaConf.select(cfg, key, throw_on_resolution_failure=False) for key in keys(tree, prefix)}


def check_resume_keeps_the_run(cfg: DictConfig, run_dir: Path) -> None:
    """Fails, naming the overrides, when ``resume=<run dir>`` would change the model or data that the run's
    ``.hydra/config.yaml`` records: its checkpoints belong to those. Trainer, callbacks and loggers may change
    (``trainer.max_epochs=<more>`` extends a run)."""
    record = run_dir / ".hydra"
    if not (record / "config.yaml").is_file():
        return
    saved = OmegaConf.load(record / "config.yaml")
    ours, theirs = ({}, {})
    for node in ("model", "data"):
        ours.update(flat_items(cfg, node))
        theirs.update(flat_items(saved, node))
    missing = "(absent)"
    changed = [
        key
        for key in sorted(ours.keys() | theirs.keys())
        if ours.get(key, missing) != theirs.get(key, missing) and not key.startswith(RESUME_MAY_CHANGE)
    ]
    if not changed:
        return
    choices = {}
    if (record / "hydra.yaml").is_file():
        choices = OmegaConf.select(OmegaConf.load(record / "hydra.yaml"), "hydra.runtime.choices", default={})
    from hydra.core.hydra_config import HydraConfig

    from vivit.config import hydra_overrides  # here: vivit.config imports this module

    groups = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}

    def changes(key: str, value: str) -> bool:  # a group option, or a value that feeds model.* or data.*
        if key in groups:
            return choices.get(key) != value
        if any(c == key or c.startswith(f"{key}.") for c in changed):
            return True
        feeds = key.split(".")[0] not in ("model", "data", "trainer", "callbacks", "logger", "paths", "resume")
        get = {"default": None, "throw_on_resolution_failure": False}
        return feeds and OmegaConf.select(cfg, key, **get) != OmegaConf.select(saved, key, **get)

    named = [f"{key}={value}" for key, value in hydra_overrides().items() if changes(key, value)]
    first = changed[0]
    detail = f"{first}: {theirs.get(first, missing)!r} in the run, {ours.get(first, missing)!r} here"
    if len(changed) > 1:
        detail += f", and {len(changed) - 1} more"
    if named:
        raise ValueError(
            f"resume={cfg.resume}: {' '.join(named)} would change the run's model or data ({detail}); a resumed "
            "run keeps them: drop these overrides, or start a new run"
        )
    raise ValueError(
        f"resume={cfg.resume}: the model or data that this command composes differ from the run's "
        f"{record / 'config.yaml'} ({detail}; were the config files changed since?); a resumed run keeps them"
    )


def check_resume(cfg: DictConfig) -> None:
    """Fails when ``resume=<run dir>`` holds no whole checkpoint or would change the run's model or data, or when
    ``ckpt_path`` names no checkpoint file (``ckpt_path=last`` may find none: the run then starts from scratch).
    ``resume=<run dir> ckpt_path=<file>`` continues the run from that file."""
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume"):
        run_dir = Path(cfg.resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"resume={cfg.resume}: no such run directory")
        newest = newest_checkpoint(run_dir)
        if newest is None:
            raise FileNotFoundError(f"resume={cfg.resume}: no checkpoints/last.ckpt or hpc_ckpt_*.ckpt in it")
        problem = checkpoint_problem(newest) if ckpt_path in (None, "last") else None
        if problem is not None:
            others = sorted(run_dir.glob("**/*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
            good = next((p for p in others if p != newest and checkpoint_problem(p) is None), None)
            offer = (
                f"; the previous good one is {good}: continue from it with resume={cfg.resume} ckpt_path={good}"
                if good
                else "; no other checkpoint in it is whole"
            )
            raise ValueError(f"resume={cfg.resume}: its newest checkpoint {newest} {problem}{offer}")
        check_resume_keeps_the_run(cfg, run_dir)
    if ckpt_path not in (None, "last", "best", "hpc"):
        check_checkpoint(Path(ckpt_path))
