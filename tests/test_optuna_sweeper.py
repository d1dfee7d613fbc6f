"""The Optuna sweeper's search space (hydra_plugins/face_optuna_sweeper): Hydra's sweep syntax to Optuna's
distributions, checked against Optuna's own classes; the full sweep and its resume are in test_scale_sweeps."""

from __future__ import annotations

import pytest
from conftest import run_main
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.face_optuna_sweeper.sweeper import grid, search_space
from pipeline.utils.errors import UserError


def test_sweep_syntax_to_distributions():
    space, fixed = search_space([
        "a=tag(log, interval(1e-4, 1e-2))", "b=interval(0.0, 0.3)", "c=tag(int, interval(1, 8))", "c2=interval(1, 8)", "c3=tag(int, log, interval(1, 64))", "d=choice(8, 16, 32)",
        "e=range(1, 10, 3)", "f=range(0.0, 1.0, 0.25)", "g=adamw", "h=choice(x, y)",
    ])
    assert space == {
        "a": FloatDistribution(1e-4, 1e-2, log=True), "b": FloatDistribution(0.0, 0.3),
        "c": IntDistribution(1, 8), "c2": FloatDistribution(1.0, 8.0),
        "c3": IntDistribution(1, 64, log=True), "d": CategoricalDistribution([8, 16, 32]),
        # Hydra's range() excludes its stop: range(1, 10, 3) is 1, 4, 7.
        "e": IntDistribution(1, 7, step=3), "f": FloatDistribution(0.0, 0.75, step=0.25),
        "h": CategoricalDistribution(["x", "y"]),
    }
    assert fixed == {"g": "adamw"}


def test_grid_of_discrete_space():
    space, _ = search_space(["d=choice(8, 16)", "e=range(1, 10, 3)", "f=range(0.0, 1.0, 0.5)"])
    assert grid(space) == {"d": [8, 16], "e": [1, 4, 7], "f": [0.0, 0.5]}
    with pytest.raises(UserError, match=r"^hydra.sweeper.params.b: the grid sampler needs a discrete space"):
        grid(search_space(["b=interval(0.0, 0.3)"])[0])


@pytest.mark.parametrize("override, message", [
    ("a=interval(0.3, 0.1)", r"^hydra.sweeper.params.a: interval\(0.3, 0.1\) needs start < end"),
    ("a=tag(log, interval(0.0, 1.0))", r"^hydra.sweeper.params.a: tag\(log, interval\(...\)\) needs a start above 0"),
    ("a=range(5, 1)", r"^hydra.sweeper.params.a: range\(5, 1, 1\) is empty"),
])
def test_wrong_search_space_names_the_key(override, message):
    with pytest.raises(UserError, match=message):
        search_space([override])


def test_wrong_sweeper_value_is_one_error_line(tmp_path):
    proc = run_main("train.py", "hparams_search=optuna", f"paths.results_dir={tmp_path}", "hydra.sweeper.direction=up")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.direction='up': give minimize or maximize (or a list of them, one per value the task "
        "returns)")
    assert "Traceback" not in proc.stderr
