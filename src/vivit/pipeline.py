"""Wiring from a composed config to a run: the only module that calls Hydra's ``instantiate``.

``train(cfg)`` builds data → model → init → callbacks → loggers → trainer, fits, tests the best
checkpoint and prints where everything went. ``evaluate(cfg)`` rebuilds a run from the config
stored inside its checkpoint and tests it.
"""

from __future__ import annotations

import inspect
import json
import logging
import netrc
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelSummary
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from vivit.config import check_resume, hydra_overrides, newest_checkpoint
from vivit.report import RESULTS_FILE, save_results
from vivit.training.checkpoint_io import AtomicCheckpointIO, read_checkpoint

log = logging.getLogger(__name__)

# Lightning's top package gives its logger a console handler of its own at import, while its records also reach
# the root logger's (Hydra's console and <task>.log): every line twice. When the root logger is configured, it
# alone prints them, as Lightning's subpackages already arrange for themselves.
if logging.getLogger().hasHandlers():
    logging.getLogger("lightning").handlers.clear()
# Advertisements for Lightning's cloud services (litlogger, litmodels), logged at every run: nothing to act on.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: not r.getMessage().startswith("💡 Tip"))
# Lightning 2.6 builds torch's deprecated LeafSpec in its own code; nothing a user can change (a later Lightning).
warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.")

CONFIG_KEY = "vivit_config"  # where a checkpoint keeps the resolved run config


class SaveConfigInCheckpoint(Callback):
    """Stores the resolved run config in every checkpoint, so that a checkpoint alone can be evaluated."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


def wandb_has_api_key() -> bool:
    """True when W&B can go online without a prompt: WANDB_API_KEY or a `wandb login` entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def instantiate_loggers(cfg: DictConfig | None, axes: dict[str, Any] | None = None) -> list[Any]:
    """The configured loggers. W&B: offline unless an API key exists, the run's ``axes`` as tags
    (``model=factorised_encoder``, ...) and, in a multirun, the sweep's directory name as its group."""
    loggers = []
    for name, node in (cfg or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if node._target_.endswith("WandbLogger"):
            extra: dict[str, Any] = {
                "tags": [*(node.get("tags") or []), *(f"{k}={v}" for k, v in (axes or {}).items())]
            }
            if node.get("offline") is None:
                extra["offline"] = not wandb_has_api_key()
            if node.get("group") is None:
                extra["group"] = sweep_name()
            node = OmegaConf.merge(node, extra)
            log.info(
                "logger %s: W&B %s, group %s%s", name, "offline" if node.offline else "online", node.group,
                f" (upload later: wandb sync {node.save_dir}/wandb/offline-run-*)" if node.offline else "",
            )  # fmt: skip
        loggers.append(instantiate(node))
        if node._target_.endswith("WandbLogger"):  # Lightning always passes it (None): W&B warns it has no effect
            loggers[-1]._wandb_init.pop("anonymous", None)
    return loggers


SWEEP_GROUP_ENV = "VIVIT_SWEEP_GROUP"  # the sweep name, for a multirun job run in a child process
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def sweep_name() -> str | None:
    """The multirun's directory name (shared by all its jobs), or None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if os.environ.get(SWEEP_GROUP_ENV):
        return os.environ[SWEEP_GROUP_ENV]
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return [instantiate(node) for node in (cfg or {}).values() if isinstance(node, DictConfig) and "_target_" in node]


def run_axes(cfg: DictConfig) -> dict[str, Any]:
    """The choices that identify a run (for logger config, tags and grouping)."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    axes = {
        k: choices.get(k) for k in ("data", "model", "tokeniser", "backbone", "init", "regularisation", "optimizer")
    }
    return {**axes, "seed": cfg.get("seed")}


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """Data module and model from their config nodes: every construction-time check runs here."""
    datamodule = instantiate(cfg.data)
    if getattr(datamodule, "heads", None):  # class counts read from the dataset (data.heads.<head>=auto): to the model
        cfg.data.heads, cfg.data.num_classes = dict(datamodule.heads), datamodule.num_classes
    model = instantiate(cfg.model)
    if cfg.model.get("optimizer") is not None:  # built for real only when fitting starts: check it now
        try:
            instantiate(cfg.model.optimizer)([torch.nn.Parameter(torch.zeros(1))])
        except (TypeError, ValueError) as error:
            raise ValueError(f"optimizer ({cfg.model.optimizer._target_}): {error}") from error
    return datamodule, model


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint that fitting starts from, checked before anything is built.

    ``resume=<run dir>``: that directory's newest checkpoint (it must have one), or ``ckpt_path`` when given;
    Hydra's run directory is then that directory too. ``ckpt_path=last``: this run directory's newest
    checkpoint, or none (the run starts from scratch), for jobs that restart themselves in a fixed directory.
    Otherwise ``ckpt_path``.
    """
    check_resume(cfg)
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume") and ckpt_path in (None, "last"):
        path = newest_checkpoint(Path(cfg.resume))
    elif ckpt_path == "last":
        path = newest_checkpoint(Path(cfg.paths.output_dir))
        if path is None:
            log.info("ckpt_path=last: no checkpoint in %s yet, starting from scratch", cfg.paths.output_dir)
            return None
    elif ckpt_path is None or ckpt_path in ("best", "hpc"):
        return ckpt_path
    else:
        path = Path(ckpt_path)
    stored = read_checkpoint(path).get(CONFIG_KEY)
    if stored is not None:  # the trained weights decided the normalisation (init=...): keep it
        cfg.data.mean, cfg.data.std = stored["data"]["mean"], stored["data"]["std"]
    return str(path)


def finished_metrics(run_dir: Path) -> dict[str, float] | None:
    """The metrics stored in a finished run's ``results.json``, or None when the run has not finished."""
    done = run_dir / RESULTS_FILE
    if not done.is_file():
        return None
    return {k: v for k, v in json.loads(done.read_text()).items() if isinstance(v, float)}


def epochs_trained(path: str) -> int:
    """The epochs that a checkpoint has finished."""
    checkpoint = read_checkpoint(path)
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    return progress.get("processed", checkpoint.get("epoch", 0) + 1)


TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"  # src/train.py, beside the package
# Strategies whose launcher starts the other processes by running the command line again.
RELAUNCHING_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false", "fsdp")


def multirun_job_launches_processes(cfg: DictConfig) -> bool:
    """True for a multirun job whose trainer would start its other processes by re-running the command.

    Lightning builds their command from ``sys.argv``, which in a multirun is the whole sweep: every
    extra process would run all of the sweep's jobs. Processes that a cluster starts (SLURM tasks,
    torchrun) and ``ddp_spawn`` are not affected.
    """
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

    The child gets only this job's overrides, in run mode, with this job's directory as its run
    directory, so the processes its trainer starts (from the child's command line) run this job, once,
    in this directory. SIGTERM and SIGUSR1 are passed on to it (preemption saves a checkpoint there).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

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
    env = {**os.environ, SWEEP_GROUP_ENV: sweep_name() or ""}
    child = subprocess.Popen(command, cwd=get_original_cwd(), env=env)
    forward = {sig: signal.signal(sig, lambda signum, _: child.send_signal(signum)) for sig in FORWARDED_SIGNALS}
    try:
        code = child.wait()
    finally:
        for sig, handler in forward.items():
            signal.signal(sig, handler)
    if code != 0:
        if code in (130, 143):
            raise SystemExit(code)  # interrupted: the checkpoint is in the job directory, a re-run resumes it
        raise RuntimeError(f"the job in {out} failed (exit code {code}): see its log there")
    metrics = finished_metrics(Path(out))
    if metrics is None:
        raise RuntimeError(f"the job in {out} finished without writing {RESULTS_FILE}")
    return metrics


@contextmanager
def interrupt_as_stop_signal() -> Iterator[list[bool]]:
    """While fitting, Ctrl-C (SIGINT) does what SIGTERM does: the run stops after the current batch, saving
    ``last.ckpt`` (:class:`vivit.training.callbacks.FaultTolerance`). A second Ctrl-C aborts at once. Yields a
    list that holds True once Ctrl-C was pressed. An ignored SIGINT (a background job) stays ignored."""
    pressed: list[bool] = []
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        yield pressed
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, previous)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):  # before Lightning handles SIGTERM
            raise KeyboardInterrupt
        pressed.append(True)
        log.warning("Ctrl-C: stopping after this batch and saving last.ckpt (Ctrl-C again aborts at once)")
        signal.raise_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test one run; returns the final metrics (validation and test).

    A run whose directory already holds ``results.json`` has finished: it is skipped and its stored
    metrics are returned (so re-running a sweep, whose job directories are stable, skips its done jobs);
    with ``resume=<run dir>``, a larger ``trainer.max_epochs`` than it has trained continues it instead.
    Ctrl-C stops fitting as SIGTERM does (:func:`interrupt_as_stop_signal`), with exit status 130.
    A multirun job that trains on several processes runs in a child process
    (:func:`run_job_in_subprocess`).
    """
    done = Path(cfg.paths.output_dir) / RESULTS_FILE
    metrics = finished_metrics(done.parent)
    if metrics is not None and not cfg.get("resume"):
        log.info("%s exists: this run has finished, skipping it", done)
        return metrics
    if multirun_job_launches_processes(cfg):
        return run_job_in_subprocess(cfg)
    ckpt_path = resume_checkpoint(cfg)
    if metrics is not None:  # resume=<finished run>: trainer.max_epochs=<more> trains it longer
        epochs, max_epochs = epochs_trained(ckpt_path), cfg.trainer.get("max_epochs")
        if max_epochs is None or max_epochs < 0 or max_epochs <= epochs:
            hint = f"to train it longer: resume={cfg.resume} trainer.max_epochs=<more than {epochs}>"
            log.info("%s exists: this run has finished %d epochs, skipping it (%s)", done, epochs, hint)
            return metrics
        log.info("the finished run %s goes on from %d to %d epochs", cfg.resume, epochs, max_epochs)
    if ckpt_path not in (None, "best", "hpc"):
        log.info("resuming from %s", ckpt_path)
    axes = " ".join(f"{k}={v}" for k, v in run_axes(cfg).items() if v is not None)
    log.info("run %s in %s", axes, cfg.paths.output_dir)  # the config in brief; all of it: .hydra/config.yaml
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(cfg)
    if hasattr(datamodule, "read_annotations"):  # every split the run reads, now, rather than after hours of fit
        datamodule.read_annotations(*[s for s in ("fit", "test") if cfg.get("train" if s == "fit" else s, True)])
    if ckpt_path is None and "_target_" in cfg.get("init", {}):  # resuming restores trained weights
        report = instantiate(cfg.init)(model.net)
        log.info("%s", report)
        if report.mean is not None:  # the weights decide the input normalisation; the run config records it
            cfg.data.mean, cfg.data.std = list(report.mean), list(report.std)
            datamodule.mean, datamodule.std = tuple(report.mean), tuple(report.std)
        else:
            log.warning("%s does not state its input normalisation: using data.mean/std", report.source)
        if rank_zero_only.rank == 0:
            report.save(Path(cfg.paths.output_dir) / "init_report.json")

    resolved = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), SaveConfigInCheckpoint(resolved)]
    loggers = instantiate_loggers(cfg.get("logger"), axes=run_axes(cfg))
    plugins = [instantiate(node) for node in cfg.trainer.get("plugins") or []]
    if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
        plugins.append(AtomicCheckpointIO())
    # callbacks.model_summary prints the summary: Lightning adds no default one (nor says so)
    summary = cfg.trainer.get("enable_model_summary", True) and not any(isinstance(c, ModelSummary) for c in callbacks)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins, enable_model_summary=summary
    )
    for logger in trainer.loggers:
        logger.log_hyperparams({**resolved, "axes": run_axes(cfg)})

    if cfg.get("train", True):
        log.info(
            "effective batch %d = data.batch_size %d x %d processes x trainer.accumulate_grad_batches %d "
            "(the learning rate is used as given, not scaled with the batch)",
            datamodule.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
            datamodule.batch_size,
            trainer.world_size,
            trainer.accumulate_grad_batches,
        )
        try:
            with interrupt_as_stop_signal() as interrupted:
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException:
            log.warning(
                "stopped by a signal; the checkpoint is in %s/checkpoints. Continue with the same command "
                "and resume=%s",
                cfg.paths.output_dir,
                cfg.paths.output_dir,
            )
            raise SystemExit(130 if interrupted else 143) from None  # 128 + SIGINT or SIGTERM: not finished
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test", True):
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)  # summarise() prints them
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    summarise(trainer, metrics, best)
    if rank_zero_only.rank == 0:
        save_run_results(cfg, metrics)
    return metrics


def save_run_results(cfg: DictConfig, metrics: dict[str, float], out: str | Path | None = None) -> None:
    """``<out>/results.json`` for reports (``out``: the run directory by default): axes, overrides, metrics,
    params, GFLOPs, throughput. ``cfg`` is the run config that built the model."""
    with torch.device("meta"):  # counted without memory or compute
        net = instantiate(cfg.model.net)
    video_shape = (net.tokeniser.in_chans, *net.tokeniser.video_size)
    path = Path(out or cfg.paths.output_dir) / RESULTS_FILE
    save_results(path, net, video_shape, metrics, axes=run_axes(cfg), overrides=hydra_overrides())


def load_checkpoint(path: str | Path) -> tuple[dict, DictConfig]:
    """A checkpoint written by src/train.py (on CPU) and the run config stored inside it."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    if CONFIG_KEY not in checkpoint:
        raise ValueError(f"{path} holds no run config ({CONFIG_KEY!r}); it was not written by src/train.py")
    return checkpoint, OmegaConf.create(checkpoint[CONFIG_KEY])


def load_model(path: str | Path) -> tuple[L.LightningModule, DictConfig]:
    """A checkpoint's trained model, rebuilt from its stored run config: eager (``model.compile`` is
    ignored), on CPU, in eval mode; and the run config."""
    checkpoint, run_cfg = load_checkpoint(path)
    model = instantiate(OmegaConf.merge(run_cfg.model, {"compile": False}))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), run_cfg


def check_accepted(node: DictConfig, overrides: dict[str, Any], name: str) -> None:
    """Fails naming the first of ``overrides`` that neither ``node`` (a checkpoint's config) has nor its
    ``_target_`` takes; a key that the target takes is added (a checkpoint written before the key existed)."""
    from hydra.utils import get_class

    new = [key for key in overrides if key not in node]
    if not new or "_target_" not in node:
        return
    parameters = inspect.signature(get_class(node._target_)).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    if refused := [key for key in new if key not in {p.name for p in parameters}]:
        raise ValueError(
            f"{name}.{refused[0]}: the checkpoint's {name} config has no such key and {node._target_} takes "
            f"no such argument"
        )


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test a checkpoint, rebuilding its model and data from the config saved inside it."""
    path = Path(cfg.ckpt_path)
    checkpoint, run_cfg = load_checkpoint(path)
    for node in ("data", "model"):  # e.g. data.test_clips, model.view_average
        overrides = {k: v for k, v in (cfg.get(node) or {}).items() if v is not None}
        check_accepted(run_cfg[node], overrides, node)
        run_cfg[node] = OmegaConf.merge(run_cfg[node], overrides)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule, model = build(run_cfg)
    if hasattr(datamodule, "read_annotations"):
        datamodule.read_annotations("test")
    loggers = instantiate_loggers(cfg.get("logger"))
    model.load_state_dict(checkpoint["state_dict"])  # the weights alone: the training callbacks' state stays out
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, enable_checkpointing=False)
    trainer.test(model, datamodule=datamodule, verbose=False)  # summarise() prints the metrics
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    summarise(trainer, metrics, str(path))
    if rank_zero_only.rank == 0:  # in the evaluation's directory: `-m data.test_clips=1,2,4` is a sweep to report
        save_run_results(run_cfg, metrics, out=cfg.paths.output_dir)
    return metrics


@rank_zero_only
def summarise(trainer: L.Trainer, metrics: dict[str, float], checkpoint: str) -> None:
    """Prints the run's metrics and paths, after ending its W&B run (if any) so that W&B's closing lines
    come first, and plain (at exit it prints them with colour codes), and a multirun's next job gets its own."""
    from hydra.core.hydra_config import HydraConfig

    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()

    out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(trainer.default_root_dir)
    lines = ["", "Summary"]
    lines += [  # counts (test/videos, test/views) as whole numbers
        f"  {k:<28} {v:{'.0f' if k.endswith(('/videos', '/views')) else '.4f'}}"
        for k, v in sorted(metrics.items())
        if not k.endswith("_step") and not k.startswith("lr-")
    ]
    lines += [
        f"  checkpoint: {checkpoint or '(none saved)'}",
        f"  config:     {out / '.hydra' / 'config.yaml'}",
        f"  logs:       {out}",
    ]
    print("\n".join(lines))
