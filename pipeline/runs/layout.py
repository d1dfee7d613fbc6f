"""Every path of a run folder, spelt once: no other module names a run's files or folders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


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

    @property
    def hydra_dir(self) -> Path:
        return self.root / ".hydra"

    @property
    def config(self) -> Path:
        return self.hydra_dir / "config.yaml"

    @property
    def hydra_config(self) -> Path:
        return self.hydra_dir / "hydra.yaml"

    @property
    def overrides(self) -> Path:
        return self.hydra_dir / "overrides.yaml"

    @property
    def config_pickle(self) -> Path:
        return self.hydra_dir / "config.pickle"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def metrics(self) -> Path:
        return self.results / "metrics.json"

    @property
    def test_metrics(self) -> Path:
        return self.results / "test_metrics.json"

    @property
    def history(self) -> Path:
        return self.results / "metrics_history.json"

    @property
    def run_state(self) -> Path:
        return self.results / "run_state.json"

    @property
    def init_record(self) -> Path:
        return self.results / "init_from.json"

    @property
    def split(self) -> Path:
        return self.results / "split.json"

    @property
    def benchmark(self) -> Path:
        return self.results / "benchmark.json"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def tests(self) -> Path:
        return self.root / "tests"

    @property
    def test_log(self) -> Path:
        return self.root / "test.log"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    def is_run(self) -> bool:
        """A run folder holds the config Hydra saved for it."""
        return self.config.is_file()

    def test_folder(self, name: str) -> RunLayout:
        """A new re-test's folder, ``tests/<name>_<time>``: a layout of its own, so the run is left as it was."""
        return RunLayout(self.tests / f"{name}_{datetime.now():%Y-%m-%d_%H-%M-%S}")

    def prediction_folder(self) -> Path:
        """A new prediction's default output folder, ``predictions/<time>``."""
        return self.predictions / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
