"""A fast_dev_run (one batch of train, val and test) of every experiment through train()."""

from __future__ import annotations

import pytest
from conftest import EXPERIMENTS, compose_config

from pipeline.trainers.engine import train


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run(experiment, tmp_path, data_dir):
    cfg = compose_config([f"experiment={experiment}", "debug=fast"], tmp_path / "run", data_dir)
    train(cfg)
    assert (tmp_path / "run" / "results" / "metrics.json").is_file()
