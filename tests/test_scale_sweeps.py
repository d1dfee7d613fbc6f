"""Multirun from the command line: an Optuna study that resumes, and jobs through submitit's local launcher."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import TINY_SIAMESE, run_cli

ONE_EPOCH = [*TINY_SIAMESE, "trainer.max_epochs=1", "data.train_size=128", "data.val_size=64", "data.test_size=64"]


def _trials(results: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{results / 'siamese_shapes' / 'multiruns' / 'optuna.db'}"
    return optuna.load_study(study_name="siamese_shapes", storage=storage).trials


@pytest.mark.slow
def test_optuna_sweep_runs_and_resumes(tmp_path):
    command = ["hparams_search=optuna", f"paths.results_dir={tmp_path}", *ONE_EPOCH]
    proc = run_cli("train.py", *command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _trials(tmp_path)
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(0 <= t.value <= 1 for t in trials), "val/acc is the value"
    (sweep,) = [p for p in (tmp_path / "siamese_shapes" / "multiruns").iterdir() if p.is_dir()]
    for job in map(str, range(4)):
        metrics = json.loads((sweep / job / "results" / "metrics.json").read_text())
        assert metrics["fit"]["val/acc"] in [t.value for t in trials]
    assert [p.name for p in (tmp_path / "siamese_shapes").iterdir()] == ["multiruns"], "no stray run folders"

    proc = run_cli("train.py", *command, "hydra.sweeper.n_trials=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = _trials(tmp_path)
    assert len(resumed) == 6 and [t.params for t in resumed[:4]] == [t.params for t in trials]
    # The resumed sweep's run folders are named after their trials' numbers in the study, which records them.
    (second,) = [p for p in (tmp_path / "siamese_shapes" / "multiruns").iterdir() if p.is_dir() and p != sweep]
    assert sorted(p.name for p in second.iterdir() if p.name.isdigit()) == ["4", "5"]
    assert [Path(t.user_attrs["run_dir"]) for t in resumed[4:]] == [second / "4", second / "5"]


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_job(tmp_path):
    proc = run_cli("train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                   f"paths.results_dir={tmp_path}", *ONE_EPOCH, "hyp.optimizer.lr=0.001,0.003")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = [p for p in (tmp_path / "siamese_shapes" / "multiruns").iterdir() if p.is_dir()]
    for job, lr in (("0", 0.001), ("1", 0.003)):
        assert (sweep / job / "results" / "test_metrics.json").is_file()
        assert f"hyp.optimizer.lr={lr}" in (sweep / job / ".hydra" / "overrides.yaml").read_text().replace("'", "")
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))
