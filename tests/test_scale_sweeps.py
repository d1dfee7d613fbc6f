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


# Sweeps of DDP jobs on one machine: every job starts its own 2 processes (Lightning's launcher), trains in
# its own run folder and leaves nothing behind for the next job (pipeline.runs.ranks.job_scope).
DDP = ["trainer=ddp", "trainer.devices=2", "data.batch_size=16"]
DDP_TOLERANCE = 1e-5  # tests/trainers/test_scale_ddp.py


def _metrics(run: Path) -> dict:
    return json.loads((run / "results" / "metrics.json").read_text())


def _sweep(results: Path) -> Path:
    (sweep,) = [p for p in (results / "siamese_shapes" / "multiruns").iterdir() if p.is_dir()]
    return sweep


def _overrides(run: Path) -> list[str]:
    import yaml

    return yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())


def _assert_same_as_alone(job: Path, tmp_path: Path) -> None:
    """A sweep's job trains as the same command run alone does (its ranks took its config, not an earlier job's)."""
    alone = tmp_path / "alone"
    overrides = [o for o in _overrides(job) if not o.startswith(("paths.results_dir=", "hparams_search="))]
    proc = run_cli("train.py", f"paths.results_dir={alone}", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (alone / "siamese_shapes").iterdir()
    expected, got = _metrics(run), _metrics(job)
    for stage in ("fit", "test"):
        for key, value in expected[stage].items():
            if key.startswith(("val/", "test/")):
                assert got[stage][key] == pytest.approx(value, abs=DDP_TOLERANCE), key


@pytest.mark.slow
def test_grid_sweep_of_ddp_jobs_runs_each_job_as_its_own_process_group(tmp_path):
    proc = run_cli("train.py", "-m", *DDP, f"paths.results_dir={tmp_path}", *ONE_EPOCH, "hyp.optimizer.lr=0.001,0.03")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2, "each job starts its own second process"
    sweep = _sweep(tmp_path)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"] and (sweep / "multirun.yaml").is_file()
    assert [p.name for p in (tmp_path / "siamese_shapes").iterdir()] == ["multiruns"], "no stray run folders"
    for job, lr in (("0", "0.001"), ("1", "0.03")):
        assert f"hyp.optimizer.lr={lr}" in _overrides(sweep / job)
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert f"Run folder: {sweep / job}" in proc.stdout
    first, second = _metrics(sweep / "0"), _metrics(sweep / "1")
    assert first["fit"]["val/loss"] != second["fit"]["val/loss"]  # the learning rates made a difference
    _assert_same_as_alone(sweep / "1", tmp_path)


@pytest.mark.slow
def test_optuna_sweep_of_ddp_jobs_runs_each_trial_as_its_own_process_group(tmp_path):
    proc = run_cli("train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *DDP, f"paths.results_dir={tmp_path}",
                   *ONE_EPOCH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2
    trials = _trials(tmp_path)
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    sweep = _sweep(tmp_path)
    for trial, job in zip(trials, ("0", "1")):
        assert _metrics(sweep / job)["fit"]["val/acc"] == pytest.approx(trial.value)
    _assert_same_as_alone(sweep / "1", tmp_path)
