"""``hydra/sweeper=optuna``: Hydra's sweeper plugin for the hyper-parameter searches of conf/hparams_search/.

The keys are those of ``hydra-optuna-sweeper`` (``sampler``, ``direction``, ``storage``, ``study_name``,
``n_trials``, ``n_jobs``, ``params`` with ``interval``, ``range``, ``choice`` and ``tag(log, ...)``), so that its
users' search configs carry over; that plugin itself requires ``optuna<3``, whose storage fails on SQLAlchemy 2.
Added here: ``pruner`` and ``heartbeat_interval`` (README, "Hyper-parameter search"). Hydra imports this module
at every start (the ``hydra_plugins`` namespace package): optuna and torch are imported only when a search runs
(:mod:`vivit.search`).
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.vivit_optuna_sweeper.OptunaSweeper"
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Any = None  # an optuna.pruners class (_target_), used by callbacks.optuna_pruning; null: no pruning
    direction: str = "maximize"  # of the value that src/train.py returns: the config's optimized_metric
    storage: str | None = None  # an SQLAlchemy URL; null: sqlite:///<hydra.sweep.dir>/study.db
    study_name: str | None = None  # null: the name of hydra.sweep.dir
    n_trials: int = 20  # the study's total: the same command continues a stopped search up to it
    n_jobs: int = 1  # trials launched together (a launcher that runs them in parallel: hydra/launcher=slurm)
    heartbeat_interval: int = 30  # seconds; a trial without a heartbeat for 2 intervals was killed: it is run again
    params: dict[str, str] | None = None  # key -> search space (interval, range, choice) or a fixed value


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="vivit")


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from vivit.search import OptunaSearch

        self.search = OptunaSearch(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.search.sweep(arguments)
