"""The command line as a user meets it: run folder layout, bin/test.py, one-line errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_SIAMESE, run_cli, run_main
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_run_layout import KEPT, folder_hashes

from pipeline.utils.errors import UserError

RUN_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(_\d+)?$")


@pytest.fixture(scope="module")
def trained_run(module_tmp) -> Path:
    results = module_tmp
    proc = run_cli("train.py", f"paths.results_dir={results}", *TINY_SIAMESE, "trainer.max_epochs=2",
                   "data.train_size=128", "data.val_size=64", "data.test_size=64",  # 4 steps an epoch: enough here
                   "model=resnet18", "hyp=focal", "logger=[tensorboard,csv,mlflow]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (results / "siamese_shapes").iterdir()
    assert f"Run folder: {run}" in proc.stdout
    (results / "console.txt").write_text(proc.stdout + proc.stderr)  # what `> out.txt 2>&1` holds
    return run


def test_run_folder_layout(trained_run):
    assert RUN_NAME.match(trained_run.name)
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml", "config.pickle"):
        assert (trained_run / ".hydra" / name).is_file(), name
    checkpoints = {p.name for p in (trained_run / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and len(checkpoints) >= 2
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("metrics.json", "test_metrics.json", "metrics_history.json", "val_predictions.png", "test_predictions.png"):
        assert (trained_run / "results" / name).is_file(), name
    assert "model=resnet18" in (trained_run / ".hydra" / "overrides.yaml").read_text()
    assert (trained_run / "train.log").stat().st_size > 0


def test_one_line_per_epoch_in_the_console_file_and_train_log(trained_run):
    """stdout is a pipe here, as under nohup or SLURM: no bar redraws, one line per epoch naming the monitored
    metric, with its value, the best so far and the epoch time; records carry no logger names."""
    console = (trained_run.parent.parent / "console.txt").read_text()
    log = (trained_run / "train.log").read_text()
    epoch_line = re.compile(r"epoch (\d+) \[\d+/2\]  train/loss \d+\.\d{4}  val/loss (\d+\.\d{4})  best \d+\.\d{4} \(epoch \d\)  \d+\.\d s")
    for text in (console, log):
        epochs = [int(m.group(1)) for m in epoch_line.finditer(text)]
        assert epochs == [0, 1], text[-3000:]
        assert "lightning.pytorch" not in text and "][" not in text
    assert "\r" not in console and "Epoch 0/" not in console and "Validation" not in console  # no progress bar in the file
    history = json.loads((trained_run / "results" / "metrics_history.json").read_text())
    logged = [float(m.group(2)) for m in epoch_line.finditer(log)]
    assert logged == pytest.approx([row["val/loss"] for row in history], abs=1e-4)


def test_results_csv_and_png(trained_run):
    """results.csv: one row per epoch, every scalar the csv logger got (lr and throughput too), val values equal
    to the run's metrics history; results.png written beside it."""
    with (trained_run / "results" / "results.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    columns = set(rows[0])
    assert {"train/loss_epoch", "val/loss", "val/acc", "train/lr", "train/speed/samples_per_sec"} <= columns, columns
    assert not any(c.endswith("_step") or c.startswith(("test/", "z_test/")) for c in columns)
    history = json.loads((trained_run / "results" / "metrics_history.json").read_text())
    assert [float(row["val/loss"]) for row in rows] == pytest.approx([row["val/loss"] for row in history], abs=1e-6)
    assert all(row["train/loss_epoch"] for row in rows)
    assert (trained_run / "results" / "results.png").stat().st_size > 10_000


def test_tensorboard_holds_the_scalars(trained_run):
    scalars, images, plugins = set(), set(), set()
    for event_file in (trained_run / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file), size_guidance={"images": 0, "scalars": 0}).Reload()
        scalars |= set(acc.Tags()["scalars"])
        images |= set(acc.Tags()["images"])
        if "hparams" in acc._plugin_to_tag_to_content:
            plugins |= set(acc.PluginTagToContent("hparams"))
    for tag in ("train/loss_step", "train/lr", "train/acc", "val/acc", "val/f1", "val/auroc", "val/loss", "z_test/acc"):
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    assert {"val/predictions", "z_test/predictions"} <= images
    # Time Series lists groups in the order of their first tag (TensorBoard's natural sort): train, then val first.
    groups = list(dict.fromkeys(tag.split("/", 1)[0] for tag in sorted(scalars | images)))
    assert groups[:2] == ["train", "val"], groups
    assert "_hparams_/session_start_info" in plugins


def test_mlflow_store_holds_the_runs_final_metrics(trained_run):
    """logger=[tensorboard,csv,mlflow]: a local MLflow store (no server) holds the same final metrics as
    results.csv and test_metrics.json, read back with MLflow's own client (before bin/test.py tests the run again)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run = trained_run
    client = MlflowClient(tracking_uri=f"sqlite:///{run.parent.parent / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("siamese_shapes")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.run_name == f"siamese_shapes/{run.name}" and mlflow_run.data.tags["run_dir"] == str(run)
    stored = mlflow_run.data.metrics
    with (run / "results" / "results.csv").open(newline="") as file:
        last = list(csv.DictReader(file))[-1]
    compared = [key for key, value in last.items() if key not in ("epoch", "step") and value != ""]
    assert {"val/loss", "train/loss_epoch", "train/lr"} <= set(compared)
    for key in compared:
        assert stored[key] == pytest.approx(float(last[key]), rel=1e-6), key
    tested = json.loads((run / "results" / "test_metrics.json").read_text())
    for key, value in tested.items():
        if key.startswith("test/"):  # the trackers' z_test/ (tracker_name): listed after train and val
            assert stored[f"z_{key}"] == pytest.approx(value, rel=1e-6), key
    history = client.get_metric_history(mlflow_run.info.run_id, "val/loss")
    assert len(history) == 2


def test_bin_test_evaluates_latest_and_named_runs(trained_run):
    results_dir = trained_run.parent.parent
    before = folder_hashes(trained_run)
    assert all(any(name.startswith(f"{folder}/") for name in before) for folder in KEPT)
    proc = run_main("test.py", f"paths.results_dir={results_dir}", "experiment=siamese_shapes", "data.num_workers=0", "ckpt=last")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tested,) = (trained_run / "tests").glob("last_*")
    written = json.loads((tested / "results" / "test_metrics.json").read_text())
    assert written["checkpoint"].endswith("last.ckpt") and 0 <= written["test/acc"] <= 1
    # The training run's labelled table, with the test column of the checkpoint just tested.
    header = next(line for line in proc.stdout.splitlines() if "metric" in line)
    assert "val, best epoch" in header and "test, last.ckpt" in header
    acc_row = next(line for line in proc.stdout.splitlines() if re.match(r"\W*acc\b", line))
    assert acc_row.split("│")[-2].strip() == f"{written['test/acc']:.4f}"
    assert "Tip:" not in proc.stdout + proc.stderr
    proc = run_main("test.py", f"run={trained_run}", "data.num_workers=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tested,) = (trained_run / "tests").glob("epoch*")  # named after the best checkpoint
    checkpoint = Path(json.loads((tested / "results" / "test_metrics.json").read_text())["checkpoint"])
    assert checkpoint.name != "last.ckpt" and tested.name.startswith(f"{checkpoint.stem}_")
    # Neither test changed the run; each wrote its metrics, figures, events and log in its own folder.
    assert folder_hashes(trained_run) == before
    for tested in (trained_run / "tests").iterdir():
        assert {"test_metrics.json", "test_predictions.png"} <= {p.name for p in (tested / "results").iterdir()}
        assert list((tested / "tensorboard").glob("events.*")) and (tested / "test.log").stat().st_size > 0


def _one_line_error(proc, *needles: str) -> None:
    """Exit 2 with one ``error:`` line naming ``needles``: from a real process (``run_cli``) or, for the many cases
    that stop before any work, from the command's ``main()`` in this one (``run_main``)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_group_option(tmp_path):
    _one_line_error(run_cli("train.py", "model=no_such_model", f"paths.results_dir={tmp_path}"), "model", "no_such_model")


def test_group_given_null(tmp_path):
    """Hydra refuses it with a ValueError of its own: still one line, naming the override."""
    _one_line_error(run_main("train.py", "callbacks=null", f"paths.results_dir={tmp_path}"), "callbacks=null", "~callbacks")


def test_missing_required_value(tmp_path):
    _one_line_error(run_main("train.py", "model=timm", f"paths.results_dir={tmp_path}"), "model.backbone")


def test_unknown_timm_backbone(tmp_path):
    _one_line_error(run_main("train.py", "model.backbone=resnet_nope", "debug=fast", f"paths.results_dir={tmp_path}"),
                    "model.backbone", "resnet_nope")


def test_missing_weights_file(tmp_path):
    _one_line_error(run_main("train.py", "model.weights=/no/such/weights.pth", "debug=fast",
                            f"paths.results_dir={tmp_path}"), "model.weights", "/no/such/weights.pth")


def test_resume_target_without_checkpoint(trained_run, tmp_path):
    fresh = tmp_path / "siamese_shapes" / trained_run.name
    # As if stopped before its first epoch ended.
    shutil.copytree(trained_run, fresh, ignore=shutil.ignore_patterns("checkpoints"))
    _one_line_error(run_main("train.py", f"resume={fresh}"), "resume", "last.ckpt")
    _one_line_error(run_main("train.py", f"resume={tmp_path / 'nope'}"), "nope")


def test_bin_test_on_missing_run(tmp_path):
    _one_line_error(run_main("test.py", f"run={tmp_path / 'missing'}"), "run", "missing")
    _one_line_error(run_main("test.py", f"paths.results_dir={tmp_path}"), "no finished or started run")


@pytest.mark.parametrize(("old", "new"), [("hyp.epochs", "trainer.max_epochs"), ("task.min_score", "model.min_score")])
def test_a_moved_key_names_its_new_home(old, new, tmp_path):
    """The old name of a moved setting is refused (never silently added) with the new name in the line."""
    from conftest import compose_config

    from pipeline.utils.cli import describe_error

    with pytest.raises(Exception) as caught:
        compose_config(["experiment=facemask_detection", f"{old}=3"], tmp_path / "run")
    message = describe_error(caught.value)
    assert message is not None and "\n" not in message
    assert f"{old} is now {new}" in message


@pytest.mark.parametrize("folder_flag", ["hydra.searchpath=[file://{}]", "--config-dir={}", "-cd"])
def test_a_moved_key_in_a_users_config_file_is_refused_not_ignored(tmp_path, folder_flag):
    """Hydra merges an old key from a YAML file without complaint; the run must refuse it, not train with
    the default in its place, before any run folder exists, however the user's config folder is named."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /experiment/image_folder\n  - _self_\nhyp:\n  epochs: 21\n")
    folder = [folder_flag, str(tmp_path)] if folder_flag == "-cd" else [folder_flag.format(tmp_path)]
    proc = run_main("train.py", *folder, "experiment=mine", "debug=fast", f"paths.results_dir={tmp_path / 'runs'}")
    _one_line_error(proc, "hyp.epochs is now trainer.max_epochs")
    assert not (tmp_path / "runs").exists()


def test_a_missing_config_dir_is_one_line(tmp_path):
    """Hydra reads --config-dir itself (no flag is parsed by hand); a folder that is not there is one line naming it."""
    _one_line_error(run_main("train.py", f"--config-dir={tmp_path / 'nope'}"), str(tmp_path / "nope"))


def test_a_run_saved_before_the_move_keeps_its_old_key():
    """Runs saved before the move interpolate the new key from the old one: their config still loads."""
    from omegaconf import OmegaConf

    from pipeline.utils.validation import validate_config

    old_run = OmegaConf.create({"hyp": {"epochs": 4}, "trainer": {"max_epochs": "${hyp.epochs}"}})
    validate_config(old_run)
    with pytest.raises(UserError, match="hyp.epochs is now trainer.max_epochs"):
        validate_config(OmegaConf.create({"hyp": {"epochs": 4}, "trainer": {"max_epochs": 9}}))


def test_a_key_through_a_list_is_one_line():
    """data.augment is a list in every task: a dotted key into it is one line (with the moved key's new home),
    not OmegaConf's ValueError traceback."""
    _one_line_error(run_main("train.py", "experiment=facemask_detection", "data.augment.crop=256"),
                    "a key under a list takes an index", "data.augment.crop is now data.crop")
    _one_line_error(run_main("train.py", "experiment=image_folder", "data.augment.p=0.3"), "data.augment.0.p=0.3")


def _class_folders(root: Path, classes: tuple[str, ...], splits: tuple[str, ...] = ("",), count: int = 8) -> Path:
    rng = np.random.default_rng(len(classes) + len(splits))
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(root / split / name / f"{i}.png"), rng.integers(0, 255, (20, 20, 3), np.uint8))
    return root


def test_bin_test_on_other_data_or_split_writes_beside_the_run_and_checks_its_classes(tmp_path):
    own = _class_folders(tmp_path / "own", ("female", "male"))
    proc = run_main("train.py", "experiment=image_folder", f"data.root={own}", f"paths.results_dir={tmp_path / 'runs'}",
                   "trainer.max_epochs=1", "hyp.batch_size=8", "data.image_size=[16,16]", "data.num_workers=0", "logger=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "image_folder").iterdir()
    kept = {name: (run / "results" / name).read_bytes() for name in ("split.json", "test_metrics.json")}
    other = _class_folders(tmp_path / "external", ("female", "male"), ("train", "val", "test"), count=5)
    proc = run_main("test.py", f"run={run}", f"data.root={other}", "data.num_workers=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"testing its own test split: 10 of the 30 items of '{other}'" in proc.stdout + proc.stderr
    (tested,) = (run / "tests").glob("external_*")
    written = json.loads((tested / "results" / "test_metrics.json").read_text())
    assert written["data_root"] == str(other) and 0 <= written["test/acc"] <= 1
    assert sorted(json.loads((tested / "results" / "split.json").read_text())["test"]) == \
        sorted(f"test/{c}/{i}.png" for c in ("female", "male") for i in range(5))
    assert {name: (run / "results" / name).read_bytes() for name in kept} == kept
    # Another folder with no split of its own is tested whole (not the run's fractions' test share), and says so.
    plain = _class_folders(tmp_path / "plain", ("female", "male"), count=7)
    proc = run_main("test.py", f"run={run}", f"data.root={plain}", "data.num_workers=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    items = sorted(p.relative_to(plain).as_posix() for p in plain.rglob("*.png"))
    assert f"testing all {len(items)} items of '{plain}': it has no split of its own" in proc.stdout + proc.stderr
    (tested,) = (run / "tests").glob("plain_*")
    assert sorted(json.loads((tested / "results" / "split.json").read_text())["test"]) == items
    accuracy = json.loads((tested / "results" / "test_metrics.json").read_text())["test/acc"]
    assert accuracy * len(items) == pytest.approx(round(accuracy * len(items)), abs=1e-4)  # a share of all 14
    # ... unless a split is given for it on the command line
    proc = run_main("test.py", f"run={run}", f"data.root={plain}", "data.split={train: 0.5, val: 0.25, test: 0.25}",
                    "data.num_workers=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tested = max((run / "tests").glob("plain_*"), key=lambda folder: folder.stat().st_mtime)
    assert len(json.loads((tested / "results" / "split.json").read_text())["test"]) < len(items)
    # Another split of the run's own data: its record goes beside the run's, which a resume trains on.
    proc = run_main("test.py", f"run={run}", "data.split={train: 0.5, val: 0.25, test: 0.25}", "data.num_workers=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((run / "tests").glob("split_*/results/split.json"))) == 1
    assert {name: (run / "results" / name).read_bytes() for name in kept} == kept
    wrong = _class_folders(tmp_path / "wrong", ("cat", "dog"), ("train", "val", "test"), count=3)
    _one_line_error(run_main("test.py", f"run={run}", f"data.root={wrong}", "data.num_workers=0"),
                    "['cat', 'dog']", "the run was trained on ['female', 'male']")
