"""bin/benchmark.py train: framework and plain loop over the same data, figures in a table and JSON."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_SIAMESE, run_cli

from pipeline.benchmarks.train import rate
from pipeline.utils.errors import UserError


def test_benchmark_writes_both_loops_and_their_ratio(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("benchmark.py", "train", *TINY_SIAMESE, f"paths.data_dir={tmp_path / 'data'}", "steps=6", "warmup=2",
                   "rounds=1", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(out.read_text())
    ratio = written["framework"]["samples_per_sec"] / written["plain"]["samples_per_sec"]
    assert written["framework_over_plain"] == pytest.approx(ratio)
    for loop in ("plain", "framework"):
        assert written[loop]["steps"] == 4 and written[loop]["samples_per_sec"] > 0
    assert written["batch_size"] == 32 and written["experiment"] == "siamese_shapes"


def test_rate_counts_the_steps_after_warmup():
    figures = rate(ends=[0.0, 1.0, 2.0, 4.0], cpu=[0.0, 0.5, 1.0, 1.5], sizes=[8, 8, 8, 4], warmup=2)
    assert figures["steps"] == 2 and figures["samples_per_sec"] == pytest.approx(12 / 3)
    assert figures["cpu_ms_per_step"] == pytest.approx(500)
    with pytest.raises(UserError, match="steps"):
        rate(ends=[0.0, 1.0], cpu=[0.0, 1.0], sizes=[8, 8], warmup=2)


def test_cli_needs_a_benchmark_name():
    proc = run_cli("benchmark.py")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
