"""The sweeper's structured config, registered as ``hydra/sweeper=optuna`` (and its samplers as
``hydra/sweeper/sampler=tpe|random|grid|cmaes|nsgaii|qmc``)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.face_optuna_sweeper.sweeper.OptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    # The sampler is instantiated when the sweep starts, after the check that Optuna is installed.
    _recursive_: bool = False
    # An Optuna sampler, instantiated by Hydra (``_target_`` plus its keyword arguments).
    sampler: Any = None
    # "minimize" or "maximize", or a list of them for several objectives (the task returns as many values).
    direction: Any = "minimize"
    # An Optuna storage URL (e.g. sqlite:///path/optuna.db); the study resumes from it. None: in memory.
    storage: Any = None
    study_name: Any = None
    # Trials this command runs; a resumed study keeps its earlier trials and adds n_trials more.
    n_trials: int = 20
    # Trials asked at once and handed to the launcher as one batch (parallel with a parallel launcher).
    n_jobs: int = 1
    # Share of a batch's trials that may fail before the sweep stops with their error.
    max_failure_rate: float = 0.0
    # Search space: ``key: interval(a, b)``, ``choice(...)``, ``range(...)``, ``tag(log, interval(a, b))``,
    # or a plain value (fixed for every trial).
    params: Any = None


SAMPLERS = {
    "tpe": "optuna.samplers.TPESampler",
    "random": "optuna.samplers.RandomSampler",
    "cmaes": "optuna.samplers.CmaEsSampler",
    "nsgaii": "optuna.samplers.NSGAIISampler",
    "qmc": "optuna.samplers.QMCSampler",
}

store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="face_optuna_sweeper")
for name, target in SAMPLERS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node={"_target_": target, "seed": None},
                provider="face_optuna_sweeper")
# The grid is built from the search space when the sweep starts (discrete spaces only).
store.store(group="hydra/sweeper/sampler", name="grid",
            node={"_target_": "optuna.samplers.GridSampler", "_partial_": True, "seed": None},
            provider="face_optuna_sweeper")
