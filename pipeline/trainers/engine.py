"""train() and evaluate(): compose datamodule, task, callbacks, loggers and trainer from a config."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console

from pipeline.callbacks.dashboard import curated_hparams, headline_metrics
from pipeline.callbacks.metrics_history import scalar_metrics
from pipeline.runs.folder import load_checkpoint
from pipeline.runs.layout import RunLayout
from pipeline.runs.ranks import check_launch
from pipeline.runs.run import Run, build_datamodule, build_task
from pipeline.runs.saved_config import load_run_config
from pipeline.runs.table import best_row, read_history, read_overrides
from pipeline.trainers.init_from import initialise
from pipeline.utils.console import final_table
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError
from pipeline.utils.files import read_json, write_json
from pipeline.utils.validation import validate_config

log = logging.getLogger(__name__)


def instantiate_each(nodes: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a mapping (callbacks, loggers); null entries are skipped."""
    if not nodes:
        return []
    return [instantiate(node) for node in nodes.values() if node is not None and "_target_" in node]


def build_callbacks(cfg: DictConfig, loggers: list[Any]) -> list[Any]:
    """The configured callbacks; LearningRateMonitor refuses to run without a logger (logger=none)."""
    return [c for c in instantiate_each(cfg.get("callbacks")) if loggers or not isinstance(c, LearningRateMonitor)]


def route_lightning_logs() -> None:
    """Send Lightning's messages through the root logger, so they reach the run's ``train.log`` too.

    Lightning gives its logger its own console handler and stops propagation when it is imported
    before logging is configured, which is always the case under Hydra.
    """
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lightning_logger = logging.getLogger(name)
        lightning_logger.handlers.clear()
        lightning_logger.propagate = True


def train(cfg: DictConfig) -> float | None:
    """The training app: a fresh run of ``cfg``, fitted and tested (``fit``)."""
    return fit(Run.create(cfg))


def fit(run: Run) -> float | None:
    """Fit, then test the best checkpoint, holding the run folder's lock (rank 0: one writer per run);
    returns ``cfg.optimized_metric`` for sweepers."""
    route_lightning_logs()
    with run.writing():
        return fit_and_test(run)


def wants_cuda(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` means a CUDA GPU (``auto`` does when there is one)."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def native_bf16(accelerator: str) -> bool:
    """Whether the device ``accelerator`` names computes bfloat16 natively: a CUDA GPU that supports it, or a
    CPU with AVX512-BF16/AMX (elsewhere bf16 is emulated, slower than fp32)."""
    if wants_cuda(accelerator):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if accelerator not in ("cpu", "auto"):
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(trainer_cfg: DictConfig) -> None:
    """``trainer.precision=auto`` becomes ``bf16-mixed`` where the device computes bfloat16 natively (about
    1.5x fp32 per training step on an AVX512-BF16 CPU, the usual choice on recent GPUs), else ``32-true``;
    the run's saved config records the choice. An explicit bf16 on a CPU that emulates it gets a warning."""
    precision, accelerator = str(trainer_cfg.get("precision")), str(trainer_cfg.get("accelerator", "auto"))
    if precision == "auto":
        trainer_cfg.precision = "bf16-mixed" if native_bf16(accelerator) else "32-true"
        log.info("trainer.precision=auto: %s on this %s", trainer_cfg.precision, accelerator)
    elif precision.startswith("bf16") and accelerator == "cpu" and not native_bf16("cpu"):
        log.warning("trainer.precision=%s: this CPU has no native bfloat16, so it runs slower than 32-true; "
                    "pass trainer.precision=32-true (or auto)", precision)


def build_trainer(cfg: DictConfig, **kwargs: Any) -> pl.Trainer:
    """``cfg.trainer`` instantiated (its ``precision`` resolved) with ``kwargs`` (callbacks, logger, ...)."""
    resolve_precision(cfg.trainer)
    return instantiate(cfg.trainer, **kwargs)


def prepare_run(run: Run) -> tuple[pl.Trainer, pl.LightningModule, pl.LightningDataModule]:
    """Validate, then build datamodule, task, callbacks, loggers and trainer; only then write the run's config
    files (and name them to the other ranks), so a config that does not build (a resume with a bad value)
    leaves the run folder as it was."""
    cfg = run.cfg
    validate_config(cfg)  # resumed configs do not pass through the command line's check
    check_launch(cfg.trainer)
    seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    loggers = instantiate_each(cfg.get("logger"))
    callbacks = build_callbacks(cfg, loggers)
    trainer = build_trainer(cfg, callbacks=callbacks, logger=loggers or False)
    run.save_config()
    return trainer, task, datamodule


def fit_and_test(run: Run) -> float | None:
    """The body of ``fit``: checkpoints load as plain data (``weights_only``), results are written atomically."""
    cfg, run_dir, layout = run.cfg, run.dir, run.layout
    ckpt_path = run.resume_checkpoint()
    trainer, task, datamodule = prepare_run(run)
    if ckpt_path:
        log.info("Resuming %s from %s", run_dir, ckpt_path)
    else:
        initialise(cfg, task, datamodule, run_dir)
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    fit_metrics = scalar_metrics(trainer.callback_metrics)

    results: dict[str, Any] = {"fit": fit_metrics}
    if layout.init_record.is_file():
        results["init_from"] = read_json(layout.init_record, {})
    checkpoint = trainer.checkpoint_callback
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    if best_score is not None:
        results["best"] = {"monitor": checkpoint.monitor, "score": float(best_score), "checkpoint": checkpoint.best_model_path}
    if cfg.get("test_after_train", True) and not trainer.fast_dev_run:
        has_best = checkpoint is not None and checkpoint.best_model_path
        trainer.test(task, datamodule=datamodule, ckpt_path="best" if has_best else None, verbose=False, weights_only=True)
        results["test"] = scalar_metrics(trainer.callback_metrics, "test/")
        if trainer.is_global_zero:
            write_json(layout.test_metrics, {"checkpoint": checkpoint.best_model_path if has_best else None, **results["test"]})
    if trainer.is_global_zero:
        log_hparams(trainer, cfg, results)
        write_json(layout.metrics, results)
        history = read_history(run_dir)
        Console().print(final_table(f"{cfg.name}: results", results, history, cfg.task.get("monitor_mode", "max"), run_dir))
        print(f"Run folder: {run_dir}")
    return optimized_value(cfg, results)


def log_hparams(trainer: pl.Trainer, cfg: DictConfig, results: dict[str, Any]) -> None:
    """Write the curated settings (``curated_hparams``) and the headline metrics (best validation
    epoch, validation there, test) to TensorBoard's HPARAMS view."""
    run_dir = Path(cfg.paths.output_dir)
    history = read_history(run_dir)
    best = best_row(history, results["best"]["monitor"], cfg.task.get("monitor_mode", "max")) if "best" in results else None
    metrics = headline_metrics(results, best)
    if not metrics:
        return
    params = curated_hparams(cfg, read_overrides(run_dir))
    for logger in trainer.loggers:
        logger.log_hyperparams(params, metrics)


def optimized_value(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    """The value sweepers optimise: ``cfg.optimized_metric`` from the test or fit metrics."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    value = results.get("test", {}).get(name, results["fit"].get(name))
    if value is None and name == results.get("best", {}).get("monitor"):
        value = results["best"]["score"]
    if value is None or math.isnan(value):
        raise UserError(f"optimized_metric: '{name}' was not logged (logged: {sorted(results['fit'])})")
    return float(value)


def evaluate(run: Run, ckpt: str = "best") -> dict[str, float]:
    """Test a run's checkpoint with the run's own config. Everything the test writes (metrics, figures,
    TensorBoard events, split record, log) goes to a new folder under the run's ``tests/`` (``retest_folder``):
    the run's own results, events, checkpoints and config are left as they were."""
    checkpoint = run.checkpoint(ckpt)
    out, other_data, retest_of = retest_folder(run, checkpoint)
    with logged_to(out.test_log):
        metrics = checkpoint_test_metrics(run.cfg, checkpoint, retest_of)
    cfg = run.cfg
    write_json(out.test_metrics, {"checkpoint": str(checkpoint), "data_root": cfg.data.get("root"), **metrics})
    results = {**read_json(run.layout.metrics, {"fit": {}}), "test": metrics}
    title = f"{cfg.name}: test of {run.dir.name}" + (f" on {cfg.data.root}" if other_data else "")
    Console().print(final_table(title, results, read_history(run.dir),
                                cfg.task.get("monitor_mode", "max"), run.dir, tested=checkpoint))
    print(f"Wrote {out.test_metrics}")
    return metrics


def checkpoint_test_metrics(cfg: DictConfig, checkpoint: Path, retest_of: str | None = None) -> dict[str, float]:
    """The ``test/*`` metrics of ``checkpoint`` on the test split of ``cfg.data`` (its classes checked against the
    checkpoint's), with the run's ``test_callbacks`` and loggers. ``retest_of``: another data set's name, tested
    whole unless it has a split of its own (``SplitChooser.retest_of``)."""
    trained = DataInfo.from_dict(load_checkpoint(checkpoint)["hyper_parameters"]["data_info"])
    seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg, retest_of)
    if trained.class_names and datamodule.info.class_names != trained.class_names:
        raise UserError(f"data.root: the classes of '{cfg.data.root}' are {datamodule.info.class_names}, the run was "
                        f"trained on {trained.class_names}; rename the folders or set data.class_names in the run's order")
    task = build_task(cfg, datamodule.info)
    kept = set(cfg.get("test_callbacks") or ())
    callbacks = instantiate_each({name: node for name, node in (cfg.get("callbacks") or {}).items() if name in kept})
    trainer = build_trainer(cfg, devices=1, num_nodes=1, strategy="auto", callbacks=callbacks,
                            logger=instantiate_each(cfg.get("logger")) or False)
    # Only the weights are restored for a test; Lightning's advice to pass the run's checkpoint callbacks is moot.
    warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`")
    trainer.test(task, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False, weights_only=True)
    return scalar_metrics(trainer.callback_metrics, "test/")


def retest_folder(run: Run, checkpoint: Path) -> tuple[RunLayout, bool, str | None]:
    """A new folder under the run's ``tests/`` that the test writes into (``paths.output_dir``), named after the
    checkpoint, or after the data folder or split file when ``data.root``, ``data.split_file`` or ``data.split``
    is not the run's (that data or split gets its own split record; True). On the run's own data the split the run
    recorded is read back, so a re-test tests the items the run did. Another ``data.root`` without a split
    given for it (``data.split_file``, ``data.split``) is returned (its name), to be tested whole unless it
    holds a split of its own; the run's own split file, which names the run's items, is not applied to it."""
    cfg, saved = run.cfg, load_run_config(run.dir).data
    changed = [key for key in ("root", "split_file", "split") if not same_setting(cfg.data.get(key), saved.get(key))]
    root, split_file = cfg.data.get("root"), cfg.data.get("split_file")
    if not changed:
        name = checkpoint.stem
    elif "root" in changed:
        name = Path(root).resolve().name if root else "synthetic"
    else:
        name = Path(split_file).stem if split_file else "split"
    out = run.new_test_folder(name)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out.root)
        if not changed and "split_file" in cfg.data and run.layout.split.is_file():
            cfg.data.split_file = str(run.layout.split)
    retest_of = None
    if "root" in changed and not {"split_file", "split"} & set(changed):
        retest_of = f"'{root}'" if root else "the synthetic data"
        with open_dict(cfg):
            cfg.data.split_file = None
    elif changed:
        log.info("%s not the run's: testing on that data's test split", ", ".join(f"data.{k}" for k in changed))
    log.info("Test results in %s", out.root)
    return out, bool(changed), retest_of


@contextmanager
def logged_to(path: Path) -> Iterator[None]:
    """Also write the log records of the block to ``path`` (a re-test's own log)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    route_lightning_logs()
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def same_setting(value: Any, saved: Any) -> bool:
    """Whether a data setting is the run's: paths compared resolved, split fractions as plain values."""
    if isinstance(value, str) and isinstance(saved, str):
        return Path(value).resolve() == Path(saved).resolve()
    plain = [OmegaConf.to_container(v) if isinstance(v, DictConfig) else v for v in (value, saved)]
    return plain[0] == plain[1]
