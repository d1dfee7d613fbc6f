"""``hydra/sweeper=optuna``: each batch of ``n_jobs`` trials is asked from an Optuna study, launched by
Hydra's configured launcher (local, submitit, SLURM) as ordinary jobs, and told the value each job's task
function returned. The study lives in ``storage``, so repeating the command resumes it."""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")


class SweepConfigError(ValueError):
    """A wrong ``hydra.sweeper`` value; the message names the key and how to fix it."""


def _user_error(message: str) -> Exception:
    # The project's UserError (one `error:` line, exit 2) where the project is importable; a plain
    # ValueError subclass elsewhere, so the plugin has no import-time dependency on the project.
    try:
        from pipeline.utils.errors import UserError
    except ImportError:
        return SweepConfigError(message)
    return UserError(message)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise _user_error("hydra/sweeper=optuna (hparams_search=optuna) needs Optuna: install the `sweep` extra, "
                          "pip install 'face-pipeline[sweep]', or run `make venv`") from None
    return optuna


def distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override (``interval``, ``choice``, ``range``, ``tag(log, ...)``,
    ``tag(int, interval(...))`` for whole numbers),
    or the override's value as a string when it is a plain value (the same in every trial)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key = override.get_key_element()
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    if override.is_choice_sweep() or (override.is_range_sweep() and override.value().shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        for choice in choices:
            if not isinstance(choice, str | int | float | bool | type(None)):
                raise _user_error(f"hydra.sweeper.params.{key}: a choice takes str, int, float, bool or null "
                                  f"values, got {choice!r}")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        sweep = override.value()
        values = list(override.sweep_iterator())
        if not values:
            raise _user_error(f"hydra.sweeper.params.{key}: range({sweep.start}, {sweep.stop}, {sweep.step}) is empty")
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(min(values), max(values), step=abs(int(sweep.step)))
        # Hydra's range() excludes its stop: the last value is the distribution's high end.
        return FloatDistribution(min(values), max(values), step=abs(float(sweep.step)))
    if override.is_interval_sweep():
        sweep = override.value()
        assert isinstance(sweep, IntervalSweep)
        if not sweep.start < sweep.end:
            raise _user_error(f"hydra.sweeper.params.{key}: interval({sweep.start}, {sweep.end}) needs start < end")
        log_scale = "log" in sweep.tags
        if log_scale and sweep.start <= 0:
            raise _user_error(f"hydra.sweeper.params.{key}: tag(log, interval(...)) needs a start above 0")
        # Hydra reads interval()'s ends as floats: tag(int, interval(a, b)) asks for whole numbers.
        if "int" in sweep.tags:
            if sweep.start != int(sweep.start) or sweep.end != int(sweep.end):
                raise _user_error(f"hydra.sweeper.params.{key}: tag(int, interval(...)) needs whole-number ends")
            return IntDistribution(int(sweep.start), int(sweep.end), log=log_scale)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)
    raise _user_error(f"hydra.sweeper.params.{key}: '{override.input_line}' is not a sweep Optuna can sample "
                      "(use interval(a, b), choice(...), range(a, b[, step]) or tag(log, interval(a, b)))")


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(distributions, fixed values)`` of the ``key=value`` sweep overrides."""
    from optuna.distributions import BaseDistribution

    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        value = distribution(override)
        key = override.get_key_element()
        if isinstance(value, BaseDistribution):
            space[key] = value
            fixed.pop(key, None)
        else:
            fixed[key] = value
            space.pop(key, None)
    return space, fixed


def grid(space: dict[str, Any]) -> dict[str, list[Any]]:
    """GridSampler's choices for a discrete search space."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    choices: dict[str, list[Any]] = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            choices[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            choices[key] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = int(round((dist.high - dist.low) / dist.step)) + 1
            choices[key] = [dist.low + i * dist.step for i in range(n)]
        else:
            raise _user_error(f"hydra.sweeper.params.{key}: the grid sampler needs a discrete space "
                              "(choice(...) or range(...)), not an interval")
    return choices


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: Any, n_trials: int, n_jobs: int,
                 max_failure_rate: float, params: Any) -> None:
        self.sampler_config = sampler
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def directions(self) -> list[str]:
        given = OmegaConf.to_object(self.direction) if OmegaConf.is_config(self.direction) else self.direction
        directions = [given] if isinstance(given, str) else list(given or [])
        if not directions or any(str(d) not in DIRECTIONS for d in directions):
            raise _user_error(f"hydra.sweeper.direction={given!r}: give minimize or maximize (or a list of them, "
                              "one per value the task returns)")
        return [str(d) for d in directions]

    def check_counts(self) -> None:
        for key in ("n_trials", "n_jobs"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise _user_error(f"hydra.sweeper.{key}={value!r}: give a whole number of at least 1")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise _user_error(f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: give a share from 0 to 1")

    def sweep(self, arguments: list[str]) -> None:
        # A user mistake is one `error:` line and exit code 2, as in the project's entry points (Hydra would
        # print a traceback for an exception leaving the sweeper).
        try:
            self._sweep(arguments)
        except Exception as exc:
            if type(exc).__name__ not in ("UserError", "SweepConfigError"):
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    def _sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        optuna = _optuna()
        directions = self.directions()
        self.check_counts()
        params = [f"{key}={value}" for key, value in (self.params or {}).items()]
        space, fixed = search_space([*params, *arguments])
        if not space:
            raise _user_error("hydra.sweeper.params: no search space (give e.g. hyp.optimizer.lr: "
                              "tag(log, interval(1e-4, 1e-2)), or a sweep on the command line)")

        sampler = instantiate(self.sampler_config) if self.sampler_config is not None else None
        n_trials = self.n_trials
        if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
            choices = grid(space)
            sampler = sampler(choices)
            n_trials = min(n_trials, math.prod(len(c) for c in choices.values()))

        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=sampler,
                                    directions=directions, load_if_exists=True)
        log.info("Study %s in %s: %d earlier trials, %d to run now; sampler %s, directions %s",
                 study.study_name, self.storage, len(study.trials), n_trials, type(sampler).__name__, directions)

        job_idx = 0
        while n_trials > 0:
            batch = min(n_trials, self.n_jobs)
            trials = [study.ask(fixed_distributions=space) for _ in range(batch)]
            overrides = [tuple(f"{key}={value}" for key, value in {**trial.params, **fixed}.items())
                         for trial in trials]
            # Each trial's run folder is named after its trial number (hydra.job.num), unique in the study.
            numbers = [trial.number for trial in trials]
            first = numbers[0] if numbers == list(range(numbers[0], numbers[0] + batch)) else job_idx
            returns = self.launcher.launch(overrides, initial_job_idx=first)
            job_idx = first + len(returns)
            failures = []
            for trial, ret in zip(trials, returns, strict=True):
                run_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
                if run_dir:
                    trial.set_user_attr("run_dir", str(run_dir))
                try:
                    values = self.values(ret, len(directions), trial.number)
                except Exception as exc:  # noqa: BLE001 - the trial failed; the failure rate decides below
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    log.warning("Trial %d failed: %s", trial.number, exc)
                    failures.append(exc)
                else:
                    study.tell(trial, values)
            if failures and len(failures) / len(returns) > self.max_failure_rate:
                log.error("%d of %d trials failed (hydra.sweeper.max_failure_rate=%s)", len(failures), len(returns),
                          self.max_failure_rate)
                raise failures[0]
            n_trials -= batch
        self.report(study, directions)

    @staticmethod
    def values(ret: Any, n_values: int, number: int) -> list[float]:
        value = ret.return_value  # raises the job's own error if it failed
        given = value if n_values > 1 else [value]
        try:
            values = [float(v) for v in given]
        except (TypeError, ValueError):
            raise _user_error(f"trial {number} returned {value!r}, not {n_values} number(s): set optimized_metric "
                              "to a metric the run logs") from None
        if len(values) != n_values:
            raise _user_error(f"trial {number} returned {len(values)} values for {n_values} directions "
                              "(hydra.sweeper.direction)")
        return values

    def report(self, study: Any, directions: list[str]) -> None:
        assert self.config is not None
        completed = [t for t in study.trials if t.state.name == "COMPLETE"]
        if not completed:
            log.warning("No trial of study %s completed", study.study_name)
            return
        if len(directions) == 1:
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value,
                       "best_trial": best.number, "best_run_dir": best.user_attrs.get("run_dir")}
            log.info("Best trial %d: value %s, params %s", best.number, best.value, best.params)
        else:
            results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values, "trial": t.number}
                                                       for t in study.best_trials]}
            log.info("%d Pareto-optimal trials", len(study.best_trials))
        OmegaConf.save(OmegaConf.create(results), f"{self.config.hydra.sweep.dir}/optimization_results.yaml")
