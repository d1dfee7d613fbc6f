"""logger=[tensorboard,csv,mlflow]: a local MLflow store (no server) holds the same final metrics as
results.csv and test_metrics.json, read back with MLflow's own client."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import TINY_SIAMESE, run_cli

from pipeline.utils.errors import UserError


def test_mlflow_store_holds_the_runs_final_metrics(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    proc = run_cli("train.py", f"paths.results_dir={tmp_path}", *TINY_SIAMESE, "trainer.max_epochs=2",
                   "logger=[tensorboard,csv,mlflow]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "siamese_shapes").iterdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("siamese_shapes")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.run_name == f"siamese_shapes/{run.name}" and mlflow_run.data.tags["run_dir"] == str(run)
    stored = mlflow_run.data.metrics
    with (run / "results" / "results.csv").open(newline="") as file:
        last = list(csv.DictReader(file))[-1]
    compared = [key for key, value in last.items() if key not in ("epoch", "step") and value != ""]
    assert {"val/loss", "train/loss_epoch", "lr-AdamW"} <= set(compared)
    for key in compared:
        assert stored[key] == pytest.approx(float(last[key]), rel=1e-6), key
    tested = json.loads((run / "results" / "test_metrics.json").read_text())
    for key, value in tested.items():
        if key.startswith("test/"):
            assert stored[key] == pytest.approx(value, rel=1e-6), key
    history = client.get_metric_history(mlflow_run.info.run_id, "val/loss")
    assert len(history) == 2


def test_mlflow_missing_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ModuleNotFoundError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    from pipeline.utils.trackers import LocalMLflowLogger

    with pytest.raises(UserError, match="logger=mlflow: MLflow is not installed"):
        LocalMLflowLogger(run_dir="/tmp/x/run", experiment_name="x", tracking_uri="sqlite:////tmp/x/mlflow.db")
