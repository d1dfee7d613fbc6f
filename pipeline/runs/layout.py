"""Every path of a run folder, spelt once: no other module names a run's files or folders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# A detection test's best-F1 score threshold (``score_threshold=best`` of predict and serve).
DETECTION_THRESHOLD = "detection_threshold.json"


def _under(parent: str, name: str) -> property:
    """A path of the layout: ``name`` inside its path ``parent``."""
    return property(lambda self: getattr(self, parent) / name)


@dataclass(frozen=True)
class RunLayout:
    """The files of the run folder ``root``: Hydra's saved config, checkpoints, results, TensorBoard, re-tests.

    A re-test writes into a folder of the same layout under ``tests/`` (``test_folder``), so the code that
    writes results, figures and events takes a layout and never needs to know which kind of folder it has.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, trainer: Any) -> RunLayout:
        """The layout of the folder a Lightning trainer writes into (``trainer.default_root_dir``)."""
        return cls(Path(trainer.default_root_dir))

    hydra_dir = _under("root", ".hydra")
    config = _under("hydra_dir", "config.yaml")
    hydra_config = _under("hydra_dir", "hydra.yaml")
    overrides = _under("hydra_dir", "overrides.yaml")
    config_pickle = _under("hydra_dir", "config.pickle")
    checkpoints = _under("root", "checkpoints")
    last_ckpt = _under("checkpoints", "last.ckpt")
    results = _under("root", "results")
    metrics = _under("results", "metrics.json")
    test_metrics = _under("results", "test_metrics.json")
    history = _under("results", "metrics_history.json")
    run_state = _under("results", "run_state.json")
    init_record = _under("results", "init_from.json")
    split = _under("results", "split.json")
    detection_threshold = _under("results", DETECTION_THRESHOLD)
    benchmark = _under("results", "benchmark.json")
    tensorboard = _under("root", "tensorboard")
    tests = _under("root", "tests")
    test_log = _under("root", "test.log")
    lock = _under("root", ".lock")
    export = _under("root", "export")
    predictions = _under("root", "predictions")

    def is_run(self) -> bool:
        """A run folder holds the config Hydra saved for it."""
        return self.config.is_file()

    def test_folder(self, name: str) -> RunLayout:
        """A new re-test's folder, ``tests/<name>_<time>``: a layout of its own, so the run is left as it was."""
        return RunLayout(self.tests / f"{name}_{datetime.now():%Y-%m-%d_%H-%M-%S}")

    def prediction_folder(self) -> Path:
        """A new prediction's default output folder, ``predictions/<time>``."""
        return self.predictions / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
