"""Shared fixtures: compose the real configs, clamp them for CPU tests, run the real CLI."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.utils.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))

register_resolvers()
# Under pytest-xdist (`make test` runs one worker per core) each worker gets its share of the cores, so that
# workers and the CLI runs they start do not oversubscribe the machine; in one process, 2 threads as before.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 2) // WORKERS) if WORKERS > 1 else 2
torch.set_num_threads(THREADS)

# The files that take longest (trained runs mostly; ranked by a --durations run of the default tier), longest
# first, started first under `make test` (pytest-xdist, a file per worker, in collection order:
# --no-loadscope-reorder) so that no long file starts last while the other worker sits idle. The rest keep their order.
LONG_FILES = ("trainers/test_scale_ddp.py", "test_cli.py", "trainers/test_resume.py", "utils/test_hostile_runs.py",
              "test_runs_table.py", "utils/test_cli_fuzz.py", "utils/test_validation.py", "test_fast_dev_run.py",
              "delivery/test_deliver_siamese.py", "trainers/test_init_from.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = {ROOT / "tests" / name: rank for rank, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: first.get(item.path, len(LONG_FILES)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Captured output and logs that name undecodable files (the hostile-input tests' ``caf\\udce9``) with the
    surrogates escaped: pytest-xdist sends each report to the controller as UTF-8 and stops the whole session
    with an INTERNALERROR on a lone surrogate."""
    report = (yield).get_result()
    report.sections = [(title, text.encode("utf-8", "backslashreplace").decode("utf-8")) for title, text in report.sections]


def compose_config(overrides: list[str], output_dir: Path, data_dir: Path | None = None) -> DictConfig:
    """The real train config with ``overrides``, writing into ``output_dir`` (no Hydra run needed)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.results_dir = str(output_dir.parent)
        if data_dir is not None:
            cfg.paths.data_dir = str(data_dir)
    return cfg


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One synthetic-data cache for the whole test session (generated on first use by each experiment)."""
    return tmp_path_factory.mktemp("data")


TOY = [f"hydra.searchpath=[file://{ROOT / 'tests' / 'toy' / 'configs'}]", "experiment=brightness", "logger=none"]


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> Path:
    """A run of the toy brightness task (tests/toy: 16x16 inputs, one epoch), trained once per test process through
    bin/train.py's main() (in-process: a new interpreter's imports would cost more than the training) and shared by
    its test files: a test that writes into a run copies it first."""
    results = tmp_path_factory.mktemp("toy_results")
    proc = run_main("train.py", *TOY, f"paths.results_dir={results}", "trainer.max_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (results / "brightness").iterdir()
    return run


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Iterator[Path]:
    """A folder for one module's shared runs, removed when the module ends, so the suite's disk use stays small."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)


def one_line_error(proc, *needles: str) -> str:
    """The one ``error:`` line of a command that exited 2 with nothing else on stderr (warnings aside), naming ``needles``."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def plant(run: Path, key: str, node) -> None:
    """Write ``node`` at ``key`` into a run folder's saved config, as a hostile or edited folder would hold it."""
    config = run / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    OmegaConf.update(cfg, key, node, force_add=True)
    config.write_text(OmegaConf.to_yaml(cfg))


def run_cli(script: str, *args: str, cwd: Path = ROOT, timeout: int = 600, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``bin/<script>`` in a subprocess as a user would (through ``python <launcher>``, e.g. ``-m torch.distributed.run``)."""
    # The repository root on the path, as pytest's `pythonpath` setting gives it in-process (tests.toy).
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(THREADS), "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, *launcher, str(ROOT / "bin" / script), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def run_main(script: str, *args: str) -> subprocess.CompletedProcess:
    """``bin/<script>``'s own ``main()`` in this process, as :func:`run_cli` runs it in a new one (the same argv,
    stdout, stderr and exit code), without a new interpreter's seconds of imports: for user errors, and for runs
    whose test does not need a process of their own (its console as a file, signals, several ranks). Hydra's
    global state, the run offered to it, the root logger's handlers and torch's thread count are put back afterwards."""
    import importlib.util
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from pipeline.runs.run import SAVED_RUN_GROUP

    path = ROOT / "bin" / script
    spec = importlib.util.spec_from_file_location(f"bin_{Path(script).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root, argv, out, err = logging.getLogger(), sys.argv, StringIO(), StringIO()
    handlers, level, code, threads = list(root.handlers), root.level, 0, torch.get_num_threads()
    sys.argv = [str(ROOT / "bin" / script), *args]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            module.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        ConfigStore.instance().repo.pop(SAVED_RUN_GROUP, None)
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        torch.set_num_threads(threads)  # bin/benchmark.py sets its own
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())


def predict_files(task, datamodule, source: Path, out_dir: Path, **options) -> Path:
    """bin/predict.py's path for a built task and datamodule: ``trainer.predict`` into the prediction writer."""
    from pipeline.delivery.predict import predict_into
    from pipeline.delivery.writer import PredictionWriter

    writer = PredictionWriter(out_dir, source, options)
    predict_into(writer, task, datamodule)
    return writer.finish()


TINY_SIAMESE = [
    "data.train_size=256", "data.val_size=128", "data.test_size=128", "data.num_workers=0",
    "hyp.batch_size=32", "trainer.log_every_n_steps=2",
]


@pytest.fixture
def restore_root_logging():
    """For tests that run an entry point's main() in-process: Hydra points the root logger at the test's
    captured (then closed) streams; pytest's handlers come back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
