"""Hyper-parameter search with Optuna: ``python src/train.py -m hparams_search=<name>`` (conf/hparams_search/).

The sweeper (``hydra/sweeper=optuna``: :mod:`hydra_plugins.vivit_optuna_sweeper`, run by :class:`OptunaSearch`)
asks the study for a trial's values, runs it as an ordinary run of the sweep in ``<sweep dir>/<trial number>``
(config, checkpoints, ``results.json``) and tells the study the value that src/train.py returns (the config's
``optimized_metric``). The study lives in a database (SQLite in the sweep directory unless ``storage`` names
another), which ``<sweep dir>/search.json`` points to: the same command continues a stopped search (a trial that
was stopped or killed is run again in its own directory, from its last checkpoint), and several processes can
work on one study. :class:`PruneTrial` (``callbacks.optuna_pruning``) reports the validation metric after every
epoch and stops a trial that the pruner prunes; the trial, marked pruned in ``trial.json``, still finishes as a
run. :func:`write_search_report`: the trials, best first, and Optuna's plots (``python src/report.py <sweep dir>``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import random
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import MISSING, DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.pruners import NopPruner
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

log = logging.getLogger(__name__)
# Heartbeats, retries and the matplotlib plots are "experimental" in optuna 5, and ask/tell with heartbeats is
# what this module does on purpose (optuna's heartbeat thread belongs to Study.optimize).
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

SEARCH_FILE = "search.json"  # in the sweep directory: the study (storage, name), its metric and pruner
SEARCH_LOCK = ".search.lock"  # in the sweep directory: held while a process opens the study (one_at_a_time)
TRIAL_FILE = "trial.json"  # in each trial's directory: its number, state, value and parameters
DIRECTORY_ATTR = "directory"  # the user attribute of a trial that holds its run directory
PRUNED_ATTR = "pruned_at_epoch"  # set by PruneTrial when the pruner stops the trial
DEFAULTS_ATTR = "defaults"  # the first trial of a study: the config's own values


class OptunaSearch:
    """The sweeper's work (settings: :class:`hydra_plugins.vivit_optuna_sweeper.OptunaSweeperConf`)."""

    def __init__(self, *, sampler: Any, pruner: Any, direction: str, storage: str | None, study_name: str | None,
                 n_trials: int, n_jobs: int, heartbeat_interval: int, params: Any) -> None:  # fmt: skip
        if direction not in ("maximize", "minimize"):
            raise SystemExit(f"hydra.sweeper.direction={direction}: expected maximize or minimize")
        self.sampler, self.direction, self.storage = sampler, direction, storage  # built by Hydra (_target_)
        self.study_name, self.n_trials, self.n_jobs = study_name, n_trials, max(1, n_jobs)
        self.heartbeat_interval, self.params = heartbeat_interval, params or {}

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.job_idx = 0
        if OmegaConf.select(config, "hydra.sweeper.sampler.seed") is not None:
            self.sampler = SeededPerTrial(config.hydra.sweeper.sampler)

    def sweep(self, arguments: list[str]) -> None:
        try:
            fixed, space = search_space({**self.params, **dict(a.split("=", 1) for a in arguments if "=" in a)})
        except ValueError as error:
            raise SystemExit(f"search space (hydra.sweeper.params, command line): {error}") from None
        keys = [k for k in space if not k.startswith(("+", "~"))]  # +key: a key to add
        if unknown := [k for k in keys if OmegaConf.select(self.config, k, default=MISSING) is MISSING]:
            raise SystemExit(f"search space: {', '.join(unknown)}: no such key in the config")
        if not space:
            raise SystemExit("search space: no key to search (hydra.sweeper.params: key: interval(a, b), ...)")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        pruner = self.config.hydra.sweeper.pruner  # null: no pruning
        info = {
            "study_name": self.study_name or self.sweep_dir.name,
            "storage": self.storage or f"sqlite:///{self.sweep_dir / 'study.db'}",
            "direction": self.direction,
            "metric": self.config.get("optimized_metric"),
            "pruner": OmegaConf.to_container(pruner, resolve=True) if pruner is not None else None,  # PruneTrial's
        }
        (self.sweep_dir / SEARCH_FILE).write_text(json.dumps(info, indent=1))
        with one_at_a_time(self.sweep_dir / SEARCH_LOCK):  # processes started together: one study, one trial 0
            study = open_study(info, sampler=self.sampler, heartbeat=self.heartbeat_interval)
            if not study.get_trials(deepcopy=False):
                self.enqueue_defaults(study, space)
        log.info("Optuna study %s in %s: %d trials so far, %d in all", info["study_name"], shown(info["storage"]),
                 counted(study), self.n_trials)  # fmt: skip
        while True:
            fail_stale_trials(study)  # a killed trial (its heartbeat stopped) fails, and is enqueued to run again
            if (left := self.n_trials - counted(study)) > 0:
                self.run_batch(study, [study.ask(space) for _ in range(min(self.n_jobs, left))], fixed)
            elif running := study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                numbers, stale = [t.number for t in running], 2 * self.heartbeat_interval
                log.info("waiting for trials %s: running in another process, or killed (run again here once their "
                         "heartbeat is %d s old)", numbers, stale)  # fmt: skip
                time.sleep(self.heartbeat_interval)
            else:
                break
        log.info("search finished: python src/report.py %s shows the trials", self.sweep_dir)

    def enqueue_defaults(self, study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
        """The config's own values of the searched keys, where the space holds them: trial 0, the baseline."""
        values = {key: OmegaConf.select(self.config, key, default=None) for key in space}
        defaults = {k: v for k, v in values.items() if contains(space[k], v)}
        if len(defaults) == len(space):
            study.enqueue_trial(defaults, user_attrs={DEFAULTS_ATTR: True}, skip_if_exists=True)

    def run_batch(self, study: optuna.Study, trials: list[optuna.Trial], fixed: list[str]) -> None:
        """Runs ``trials`` (each in the directory of the trial it retries, if any) and tells the study."""
        storage, done = study._storage, threading.Event()
        directories = []
        for trial in trials:
            number = (RetryHeartbeatStaleTrialCallback.retry_history(study.trials[trial.number]) or [trial.number])[0]
            directories.append(self.sweep_dir / str(number))
            trial.set_user_attr(DIRECTORY_ATTR, str(directories[-1]))
        jobs = [
            [*fixed, *(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in t.params.items()),
             f"hydra.sweep.subdir={d.name}"]
            for t, d in zip(trials, directories)
        ]  # fmt: skip
        heartbeat = threading.Thread(target=beat, args=(storage, trials, done, self.heartbeat_interval), daemon=True)
        heartbeat.start()
        try:
            returns = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
        except BaseException:  # stopped (Ctrl-C, SIGTERM): the next command runs these trials again
            for trial in trials:
                if study.trials[trial.number].state == TrialState.RUNNING:
                    study.tell(trial, state=TrialState.FAIL)
                    RetryHeartbeatStaleTrialCallback()(study, study.trials[trial.number])
            raise
        finally:
            done.set()
        self.job_idx += len(jobs)
        for trial, directory, ret in zip(trials, directories, returns):
            self.tell(study, trial, directory, ret)

    def tell(self, study: optuna.Study, trial: optuna.Trial, directory: Path, ret: Any) -> None:
        attrs = study.trials[trial.number].user_attrs
        value = ret._return_value if ret.status.name == "COMPLETED" else None
        if PRUNED_ATTR in attrs:
            frozen = study.tell(trial, state=TrialState.PRUNED)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            frozen = study.tell(trial, value)
        else:
            reason = ret._return_value if ret.status.name == "FAILED" else f"no finite {self.config.optimized_metric}"
            log.warning("trial %d failed: %s (its log is in %s)", trial.number, reason, directory)
            frozen = study.tell(trial, state=TrialState.FAIL)
        record = {"number": frozen.number, "state": frozen.state.name, "value": frozen.value, "params": frozen.params}
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            best = study.best_trial
            log.info("trial %d %s: %s %s (best: trial %d, %s)", frozen.number, frozen.state.name.lower(),
                     self.config.optimized_metric, fmt(frozen.value), best.number, fmt(best.value))  # fmt: skip
        record.update({k: v for k, v in frozen.user_attrs.items() if k in (PRUNED_ATTR, DEFAULTS_ATTR)})
        if directory.is_dir():
            (directory / TRIAL_FILE).write_text(json.dumps(record, indent=1))


def search_space(params: dict[str, Any]) -> tuple[list[str], dict[str, BaseDistribution]]:
    """``key=value`` overrides for the fixed values, and the distribution of each searched key, from the values
    of hydra-optuna-sweeper's syntax: ``interval(a, b)``, ``tag(log, interval(a, b))``, ``range(a, b[, step])``
    (``b`` excluded, as Hydra's), ``choice(x, y, ...)`` or ``x,y,...``."""
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    return fixed, {o.get_key_element(): distribution(o) for o in overrides if o.is_sweep_override()}


def distribution(override: Override) -> BaseDistribution:
    sweep, log_scale = override.value(), "log" in getattr(override.value(), "tags", set())
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(sweep.list)
    if isinstance(sweep, RangeSweep) and all(isinstance(x, int) for x in (sweep.start, sweep.stop, sweep.step)):
        return IntDistribution(sweep.start, sweep.stop - sweep.step, step=sweep.step, log=log_scale)
    if isinstance(sweep, RangeSweep):
        return FloatDistribution(sweep.start, sweep.stop - sweep.step, step=sweep.step)
    if isinstance(sweep, IntervalSweep) and sweep.start is not None and sweep.end is not None:
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log_scale)
        return FloatDistribution(sweep.start, sweep.end, log=log_scale)
    raise ValueError(f"{override.input_line}: expected interval(a, b), range(a, b), choice(x, y) or x,y")


def contains(space: BaseDistribution, value: Any) -> bool:
    if isinstance(space, CategoricalDistribution):
        return value in space.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and space.low <= value <= space.high


class SeededPerTrial(optuna.samplers.BaseSampler):
    """The configured sampler (``hydra.sweeper.sampler``), built again for each trial with its ``seed`` plus the
    trial's number. Processes that share a study each built with the same seed would draw the same values, trial
    for trial; this way the values of trial N depend on the seed, N and the study's history, whichever process
    asks for them."""

    def __init__(self, config: DictConfig) -> None:
        self.config, self.sampler = config, instantiate(config)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.sampler = instantiate(self.config, seed=int(self.config.seed) + trial.number)
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, space: dict) -> dict:
        return self.sampler.sample_relative(study, trial, space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, name: str, space: Any) -> Any:
        return self.sampler.sample_independent(study, trial, name, space)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any, values: Any) -> None:
        self.sampler.after_trial(study, trial, state, values)


def open_study(info: dict[str, Any], sampler: Any = None, pruner: Any = None, heartbeat: int | None = None):
    """The study of ``info`` (a search.json). With ``heartbeat`` (the sweeper), created if new, and a trial that
    has not beaten for two intervals is failed by :func:`optuna.storages.fail_stale_trials` and enqueued again.
    A storage that cannot be opened ends the command with one line naming it (and what to install)."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    url = info["storage"]
    try:
        if not heartbeat:
            return optuna.load_study(study_name=info["study_name"], storage=url, pruner=pruner)
        storage = rdb_storage(url, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())  # fmt: skip
        return optuna.create_study(storage=storage, study_name=info["study_name"], direction=info["direction"],
                                   sampler=sampler, load_if_exists=True)  # fmt: skip
    except ImportError as error:  # optuna's "Failed to import DB access module", from SQLAlchemy's ImportError
        raise SystemExit(
            f"hydra.sweeper.storage={shown(url)}: no database driver for it ({error.__cause__ or error}); "
            "install one, e.g. pip install 'psycopg[binary]' for postgresql://, or pymysql for mysql+pymysql://"
        ) from None
    except ArgumentError as error:  # postgres://..., a misspelt dialect or driver
        raise SystemExit(f"hydra.sweeper.storage={shown(url)}: not a database URL SQLAlchemy knows ({error})") from None
    except OperationalError as error:  # no server there, a wrong password, a database that does not exist
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise SystemExit(f"hydra.sweeper.storage={shown(url)}: cannot open the study's database: {reason}") from None


# What a process that loses the race to create a new study database's tables is told: PostgreSQL "duplicate key
# value violates unique constraint", SQLite "table alembic_version already exists" or "database is locked".
TABLES_RACE = ("duplicate key", "already exists", "database is locked")


@contextmanager
def one_at_a_time(path: Path) -> Iterator[None]:
    """Holds the kernel's exclusive lock (``flock``) on ``path`` for the block: searches started together in one
    sweep directory open (and create) their study in turn, so that only the first enqueues the defaults trial."""
    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


def rdb_storage(url: str, attempts: int = 5, **settings: Any) -> RDBStorage:
    """Optuna's ``RDBStorage(url, **settings)``, which creates the database's tables when it first opens it.
    Processes that open a new database at once race to create them, and the losers' ``CREATE`` fails
    (:data:`TABLES_RACE`): they try again once the tables exist. Any other error is raised at once. (Searches in
    one sweep directory open it in turn, :func:`one_at_a_time`; this is for the others, and for a file system
    whose locks do not hold across machines.)"""
    from sqlalchemy.exc import DBAPIError

    for attempt in range(1, attempts):
        try:
            return RDBStorage(url, **settings)
        except DBAPIError as error:
            if not any(text in str(error.orig) for text in TABLES_RACE):
                raise
            log.info("the study's tables were being created by another process: opening %s again", shown(url))
            time.sleep(attempt * random.uniform(0.5, 1.5))
    return RDBStorage(url, **settings)  # the last attempt: its error is raised


def shown(url: str) -> str:
    """The storage URL ``url`` with its password hidden, as logs and reports show it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def beat(storage: Any, trials: list[optuna.Trial], done: threading.Event, interval: int) -> None:
    """Records the trials' heartbeat every ``interval`` seconds until ``done``: they are alive while it beats."""
    while True:
        for trial in trials:
            storage.record_heartbeat(trial._trial_id)
        if done.wait(interval):
            return


def counted(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: finished or running, a stopped trial and its retry once."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    return sum(t.state != TrialState.WAITING and t.number not in retried for t in trials)


class PruneTrial(Callback):
    """``callbacks.optuna_pruning``: in a trial of a search (a run beside a ``search.json``), reports ``monitor``
    to the trial after every validation and stops the run when the search's pruner prunes the trial; elsewhere
    it does nothing. Rank 0 decides; the other processes of a DDP run stop with it."""

    def __init__(self, monitor: str) -> None:
        self.monitor, self.active, self.trial = monitor, False, None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        search = Path(trainer.default_root_dir).resolve().parent / SEARCH_FILE
        self.active = stage == "fit" and search.is_file()
        if self.active and trainer.is_global_zero:
            info = json.loads(search.read_text())
            study = open_study(info, pruner=instantiate(info["pruner"]) if info.get("pruner") else NopPruner())
            here = str(Path(trainer.default_root_dir).resolve())
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            found = [t for t in running if t.user_attrs.get(DIRECTORY_ATTR) == here]
            self.trial = optuna.trial.Trial(study, found[-1]._trial_id) if found else None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.active or trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            raise ValueError(f"callbacks.optuna_pruning.monitor={self.monitor}: no such metric in validation; "
                             f"there are {', '.join(sorted(trainer.callback_metrics))}")  # fmt: skip
        prune = False
        if self.trial is not None:
            self.trial.report(float(trainer.callback_metrics[self.monitor]), step=trainer.current_epoch)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune):
            trainer.should_stop = True
            if self.trial is not None:
                self.trial.set_user_attr(PRUNED_ATTR, trainer.current_epoch)
                log.info("trial %d pruned after epoch %d", self.trial.number, trainer.current_epoch)
                for logger in trainer.loggers:  # W&B: the run shows that it was pruned
                    logger.log_metrics({"trial/pruned_at_epoch": trainer.current_epoch}, step=trainer.global_step)


# ---------------------------------------------------------------------------------------------- report


def is_search(sweep_dir: Path) -> bool:
    return (Path(sweep_dir) / SEARCH_FILE).is_file()


def write_search_report(sweep_dir: Path) -> tuple[Path, Path]:
    """``report.md`` (the trials, best first, against the defaults' trial), Optuna's optimisation history
    (``history.png``) and, with two finished trials or more, its parameter importances (``importance.png``) in
    ``sweep_dir``; returns the paths of the table and the history plot."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    sweep_dir = Path(sweep_dir)
    info = json.loads((sweep_dir / SEARCH_FILE).read_text())
    study = open_study(info)
    trials = [t for t in study.get_trials() if t.state != TrialState.WAITING]
    if not trials:
        raise FileNotFoundError(f"{sweep_dir}: study {info['study_name']} has no trials yet")
    history, importance = sweep_dir / "history.png", sweep_dir / "importance.png"
    save_plot(plots.plot_optimization_history(study, target_name=info["metric"]), history)
    try:
        save_plot(plots.plot_param_importances(study, target_name=info["metric"]), importance)
        figures = f"![history]({history.name}) ![importance]({importance.name})\n"
    except (ValueError, RuntimeError) as error:  # fewer than two finished trials
        importance.unlink(missing_ok=True)
        figures = f"![history]({history.name}) (no parameter importances: {error})\n"
    md = sweep_dir / "report.md"
    md.write_text(search_markdown(info, trials) + "\n" + figures)
    return md, history


def save_plot(ax: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.figure.set_size_inches(7, 4.5)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)


def search_markdown(info: dict[str, Any], trials: list[optuna.trial.FrozenTrial]) -> str:
    """The trials table: finished trials best first, then pruned ones (by their last value), then the rest."""
    from vivit.report import markdown

    sign = -1 if info["direction"] == "maximize" else 1
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}
    trials = sorted(trials, key=lambda t: (order.get(t.state, 2), sign * (t.value if t.value is not None else
                                           -sign * math.inf), t.number))  # fmt: skip
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    states = {s: sum(t.state == s for t in trials) for s in {t.state for t in trials}}
    retried_as = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t): t.number for t in trials}
    body = []
    for t in trials:
        state = t.state.name.lower()
        if PRUNED_ATTR in t.user_attrs:
            state += f" (epoch {t.user_attrs[PRUNED_ATTR]})"
        results = Path(t.user_attrs.get(DIRECTORY_ATTR, "")) / "results.json"
        top1 = json.loads(results.read_text()).get("test/acc_top1") if results.is_file() else None
        if t.number in retried_as:  # stopped or killed: its run went on in the trial that ran it again
            state, top1 = f"stopped (run again: trial {retried_as[t.number]})", None
        run = Path(t.user_attrs.get(DIRECTORY_ATTR, "–")).name
        body.append([str(t.number), state, fmt(t.value), *(fmt(t.params.get(p)) for p in params), fmt(top1), run])
    counts = ", ".join(f"{n} {s.name.lower()}" for s, n in sorted(states.items(), key=lambda x: x[0].value))
    return "\n".join(
        [
            f"# Search {info['study_name']}: {len(trials)} trials ({counts})\n",
            f"Optimised: {info['metric']} ({info['direction']}); study: {shown(info['storage'])}\n",
            baseline_line(trials),
            markdown(["trial", "state", info["metric"], *params, "test top-1", "run"], body),
        ]
    )


def baseline_line(trials: list[optuna.trial.FrozenTrial]) -> str:
    """Whether the best trial beats the config's own values (trial 0 of the study, when it has finished)."""
    best = trials[0] if trials[0].state == TrialState.COMPLETE else None
    base = next((t for t in trials if t.user_attrs.get(DEFAULTS_ATTR) and t.state == TrialState.COMPLETE), None)
    if best is None:
        return "No trial has finished yet.\n"
    if base is None:
        return f"Best: trial {best.number} ({fmt(best.value)}); the defaults' trial has not finished.\n"
    if best.number == base.number or best.value == base.value:
        return f"The defaults (trial {base.number}: {fmt(base.value)}) were not beaten by any trial.\n"
    defaults = f"{fmt(base.value)} for the defaults (trial {base.number})"
    return f"Best: trial {best.number} ({fmt(best.value)}), against {defaults}.\n"


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
