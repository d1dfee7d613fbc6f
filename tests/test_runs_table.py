"""bin/runs.py: three runs of one experiment (one interrupted) side by side, and --diff."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY_SIAMESE, run_main

from pipeline.runs.table import best_row, config_diff, find_runs

TINY = ["experiment=siamese_shapes", "debug=limit", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
        *TINY_SIAMESE]


def train(results: Path, data: Path, *overrides: str) -> Path:
    proc = run_main("train.py", f"paths.results_dir={results}", f"paths.data_dir={data}", *TINY, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(proc.stdout.split("Run folder: ")[-1].split()[0])


def _default_sigint() -> None:
    # A shell without job control (nohup, a background CI step) starts its children with SIGINT ignored,
    # and Python then never turns Ctrl-C into KeyboardInterrupt: give the trainer the default handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted_run(results: Path, data: Path) -> Path:
    """A long run stopped with Ctrl-C (SIGINT) once its first epoch's checkpoint exists."""
    before = set((results / "siamese_shapes").glob("20*"))
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "bin" / "train.py"), f"paths.results_dir={results}",
                             f"paths.data_dir={data}", *TINY, "trainer.max_epochs=200"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 300
    run = None
    while time.time() < deadline:
        new = set((results / "siamese_shapes").glob("20*")) - before
        run = next(iter(new), None)
        if run is not None and (run / "checkpoints" / "last.ckpt").is_file():
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert run is not None
    return run


@pytest.fixture(scope="module")
def three_runs(module_tmp, data_dir):
    results = module_tmp
    first = train(results, data_dir, "hyp.optimizer.lr=0.01")
    second = train(results, data_dir, "hyp.optimizer.lr=0.002")
    third = interrupted_run(results, data_dir)
    return results, [first, second, third]


def test_runs_lists_three_runs_with_state_overrides_and_metrics(three_runs):
    results, (first, second, third) = three_runs
    proc = run_main("runs.py", f"paths.results_dir={results}", "experiment=siamese_shapes")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 runs" in proc.stdout
    with (results / "siamese_shapes" / "runs.csv").open() as fh:
        rows = {row["run"]: row for row in csv.DictReader(fh)}
    assert [rows[r.name]["state"] for r in (first, second, third)] == ["finished", "finished", "interrupted"]
    # Only what differs between the runs is a column: the learning rate and the epochs.
    assert {"hyp.optimizer.lr", "trainer.max_epochs"} <= set(rows[first.name])
    assert "debug" not in rows[first.name] and "paths.results_dir" not in rows[first.name]
    # The run that kept the default shows its value, read from its own saved config.
    default_lr = yaml.safe_load((third / ".hydra" / "config.yaml").read_text())["hyp"]["optimizer"]["lr"]
    assert [rows[r.name]["hyp.optimizer.lr"] for r in (first, second, third)] == ["0.01", "0.002", str(default_lr)]
    assert default_lr not in (0.01, 0.002)
    for run in (first, second):
        history = json.loads((run / "results" / "metrics_history.json").read_text())
        best = min(history, key=lambda row: (row["val/loss"], row["epoch"]))  # the task monitors val/loss, min
        assert rows[run.name]["monitor"] == "val/loss"
        assert float(rows[run.name]["best"]) == pytest.approx(best["val/loss"])
        assert int(rows[run.name]["best_epoch"]) == best["epoch"]
        test = json.loads((run / "results" / "test_metrics.json").read_text())
        assert float(rows[run.name]["test/loss"]) == pytest.approx(test["test/loss"])
    assert rows[third.name]["test/loss"] == ""


def test_diff_shows_the_changed_keys(three_runs):
    results, (first, second, _) = three_runs
    proc = run_main("runs.py", f"paths.results_dir={results}", "experiment=siamese_shapes", "--diff", first.name, second.name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = [key for key, _, _ in config_diff(first, second)]
    assert changed == ["hyp.optimizer.lr"]
    assert "hyp.optimizer.lr" in proc.stdout and "0.002" in proc.stdout and "1 keys" in proc.stdout
    # The final metrics side by side, with the second run's minus the first's.
    tests = [json.loads((run / "results" / "test_metrics.json").read_text())["test/loss"] for run in (first, second)]
    row = next(line for line in proc.stdout.splitlines() if "test/loss" in line).replace("│", " ").split()
    assert [float(v) for v in row[-3:]] == pytest.approx([*tests, tests[1] - tests[0]], abs=1e-4)
    assert "best val/loss" in proc.stdout and "best epoch" in proc.stdout


def test_help_is_the_runs_own():
    proc = run_main("runs.py", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("bin/runs.py: the runs of an experiment")
    assert "--diff <run> <run>" in proc.stdout and "max_epochs" not in proc.stdout


def test_multirun_jobs_are_found(tmp_path, three_runs):
    results, (first, _, _) = three_runs
    job = tmp_path / "exp" / "multiruns" / "2026-01-01_00-00-00" / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text((first / ".hydra" / "config.yaml").read_text())
    (job / ".hydra" / "overrides.yaml").write_text("- hyp.optimizer.lr=0.5\n")
    runs = find_runs(tmp_path / "exp")
    assert [run.name for run in runs] == ["multiruns/2026-01-01_00-00-00/0"]
    assert runs[0].state == "interrupted" and runs[0].overrides == {"hyp.optimizer.lr": "0.5"}


def test_a_key_a_run_did_not_override_shows_its_default(tmp_path):
    from pipeline.runs.table import RunSummary, runs_rows

    def run(name: str, overrides: dict[str, str]) -> RunSummary:
        return RunSummary(path=tmp_path / name, name=name, started="", state="finished", overrides=overrides,
                          config={"hyp.optimizer.lr": 0.001, "data.batch_size": 32, "model.name": "tiny"})

    rows = runs_rows([run("a", {"hyp.optimizer.lr": "0.01", "extra.key": "1"}), run("b", {"model.name": "big"})])
    assert [(row["hyp.optimizer.lr"], row["model.name"], row["extra.key"]) for row in rows] == [
        ("0.01", "tiny", "1"), ("0.001", "big", "-")]


def test_best_row_keeps_the_earliest_tie_and_respects_the_mode():
    history = [{"epoch": 0, "m": 0.5}, {"epoch": 1, "m": 0.7}, {"epoch": 2, "m": 0.7}, {"epoch": 3, "m": 0.1}]
    assert best_row(history, "m", "max")["epoch"] == 1
    assert best_row(history, "m", "min")["epoch"] == 3
    assert best_row([{"epoch": 0}], "m") is None


def test_a_training_that_fails_before_its_first_epoch_is_marked_failed_and_skipped(tmp_path, capsys):
    from pipeline.runs.folder import latest_run
    from pipeline.runs.run import Run
    from pipeline.runs.table import runs_rows
    from pipeline.utils.errors import UserError

    results = tmp_path / "runs"
    proc = run_main("train.py", "experiment=image_folder", f"data.root={tmp_path / 'missing'}",
                    f"paths.results_dir={results}", "logger=none")
    assert proc.returncode == 2 and "data.root" in proc.stderr, proc.stderr[-3000:]
    (run,) = (results / "image_folder").iterdir()
    state = json.loads((run / "results" / "run_state.json").read_text())
    assert state["state"] == "failed" and state["reason"].startswith("data.root") and "missing" in state["reason"]
    # bin/runs.py's table says why, not "interrupted"
    (row,) = runs_rows(find_runs(results / "image_folder"))
    assert row["state"] == f"failed: {state['reason']}"
    with pytest.raises(UserError, match="failed: data.root.*start a new run"):
        Run.resume(run)
    # latest skips it for an older usable run, and says so
    older = results / "image_folder" / "2000-01-01_00-00-00"
    (older / "checkpoints").mkdir(parents=True)
    (older / "checkpoints" / "last.ckpt").write_bytes(b"")
    (older / ".hydra").mkdir()
    (older / ".hydra" / "config.yaml").write_text((run / ".hydra" / "config.yaml").read_text())
    assert latest_run(results / "image_folder") == older
    assert f"newer runs skipped: {run.name} (failed: data.root" in capsys.readouterr().err
    (older / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(UserError, match="the newest: failed: data.root"):
        latest_run(results / "image_folder")
