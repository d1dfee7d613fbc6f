"""logger=mlflow without MLflow installed. That a local MLflow store (no server) holds the same final metrics as
results.csv and test_metrics.json is checked on tests/test_cli.py's trained run (logger=[tensorboard,csv,mlflow])."""

from __future__ import annotations

import pytest

from pipeline.utils.errors import UserError


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
