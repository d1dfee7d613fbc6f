"""Wrong values a user can type: one line naming the key (or file) and exit code 2, before any work."""

from __future__ import annotations

import logging
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import CONFIG_DIR, EXPERIMENTS, compose_config, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from pipeline.runs.run import SAVED_RUN_GROUP
from pipeline.utils.cli import CheckConfig
from pipeline.utils.errors import UserError
from pipeline.utils.validation import validate_config

pytestmark = pytest.mark.usefixtures("restore_root_logging")

def compose_command(config_name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.mark.parametrize("override, expected", [
    ("trainer.max_epochs=abc", 'trainer.max_epochs="abc": expected an integer >= 1'),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1: expected an integer >= 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: expected an integer >= 1"),
    ("hyp.batch_size=0", "hyp.batch_size=0: expected an integer in [1, 65536]"),
    ("seed=abc", 'seed="abc": expected an integer in [0, 4294967295]'),
    ("data.num_workers=-1", "data.num_workers=-1: expected auto or an integer in [0, 256]"),
    ("hyp.optimizer.lr=0", "hyp.optimizer.lr=0: expected a finite number > 0"),
    ("task.threshold=1.5", "task.threshold=1.5: expected a number in [0, 1]"),
    ("+trainer.max_steps=0", "trainer.max_steps=0: expected an integer >= 1, or -1 (no step limit)"),
    ("data.image_size=[64,0]", "data.image_size=[64, 0]: expected [height, width] in pixels"),
    ("data.image_size=64", "data.image_size=64: expected [height, width] in pixels"),
    ("data.split.val=nan", "data.split.val=NaN: expected a finite number >= 0"),
])
def test_wrong_train_values(override, expected, tmp_path):
    cfg = compose_config(["experiment=image_folder", override], tmp_path)
    with pytest.raises(UserError) as caught:
        validate_config(cfg)
    assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


def test_a_square_reader_takes_one_side(tmp_path):
    validate_config(compose_config(["experiment=glasses", "data.image_size=96"], tmp_path))
    with pytest.raises(UserError, match=r"^data.image_size=\[96, 96\]: expected one side"):
        validate_config(compose_config(["experiment=glasses", "data.image_size=[96,96]"], tmp_path))


@pytest.mark.parametrize("overrides", [[f"experiment={name}"] for name in EXPERIMENTS]
                         + [[f"debug={name}"] for name in ("fast", "limit", "overfit")] + [["hparams_search=optuna"]])
def test_shipped_configs_validate(overrides):
    """As bin/train.py checks them (its Hydra callback), before Hydra's run exists (no paths.output_dir yet)."""
    CheckConfig().on_run_start(compose_command("train", overrides))  # a wrong one exits (SystemExit)


@pytest.mark.parametrize("config_name, override, key", [
    ("export", "samples=0", "samples"),
    ("export", "tolerance=-1", "tolerance"),
    ("predict", "options.batch_size=0", "options.batch_size"),
    ("predict", "options.score_threshold=2", "options.score_threshold"),
    ("predict", "options.score_threshold=high", "options.score_threshold"),
    ("serve", "score_threshold=-0.1", "score_threshold"),
    ("benchmark_inference", "runs=0", "runs"),
    ("benchmark_inference", "threads=abc", "threads"),
    ("benchmark", "trainer.max_epochs=0", "trainer.max_epochs"),
])
def test_wrong_command_values(config_name, override, key):
    validate_config(compose_command(config_name, []))
    with pytest.raises(UserError, match=rf"^{key}="):
        validate_config(compose_command(config_name, [override]))


# --- the commands over a run, in-process through their real main() -----------------------------

def fake_run(results: Path, experiment: str) -> Path:
    """A run folder as far as commands read it before any work: its saved config and Hydra's record."""
    run = results / experiment / "2026-01-01_00-00-00"
    cfg = compose_config([f"experiment={experiment}"], run)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"choices": {"experiment": experiment}}}}, run / ".hydra" / "hydra.yaml")
    return run


def one_error_line(main, argv: list[str], monkeypatch, capsys) -> str:
    """The single ``error:`` line ``main()`` prints on ``argv`` before exiting with code 2."""
    monkeypatch.setattr(sys, "argv", ["command", *argv])
    with pytest.raises(SystemExit) as caught:
        main()
    err = capsys.readouterr().err
    assert caught.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def image_folder_run(tmp_path):
    yield fake_run(tmp_path, "image_folder")
    ConfigStore.instance().repo.pop(SAVED_RUN_GROUP, None)  # the commands offered it to Hydra


def test_export_samples_zero(image_folder_run, monkeypatch, capsys):
    from pipeline.delivery.export import export_command
    from pipeline.runs.run import run_command

    line = one_error_line(run_command("export")(export_command), [f"run={image_folder_run}", "samples=0"], monkeypatch, capsys)
    assert line == "error: samples=0: expected an integer >= 1"
    assert not (image_folder_run / "export").exists()


def test_benchmark_runs_zero(image_folder_run, monkeypatch, capsys):
    from pipeline.benchmarks.inference import main

    line = one_error_line(main, [f"run={image_folder_run}", "runs=0"], monkeypatch, capsys)
    assert line == "error: runs=0: expected an integer >= 1"
    assert not (image_folder_run / "results" / "benchmark.json").exists()


def test_predict_wrong_batch_size_and_out_file(image_folder_run, monkeypatch, capsys, tmp_path):
    from pipeline.runs.run import run_command

    main = run_command("predict")(lambda run: pytest.fail("predicted"))
    line = one_error_line(main, [f"run={image_folder_run}", "input=x", "options.batch_size=0"], monkeypatch, capsys)
    assert line.startswith("error: options.batch_size=0: expected an integer in [1, ")

    from pipeline.delivery.predict import predict

    existing = tmp_path / "taken.csv"
    existing.write_text("keep me")
    main = run_command("predict")(predict)
    line = one_error_line(main, [f"run={image_folder_run}", f"input={existing}", f"out={existing}"], monkeypatch, capsys)
    assert line == f"error: out: '{existing}' is a file; give a folder for the predictions (out=<folder>)"
    assert existing.read_text() == "keep me"


def test_a_run_of_another_experiment_is_refused(image_folder_run, monkeypatch, capsys):
    from pipeline.delivery.export import export_command
    from pipeline.runs.run import run_command

    line = one_error_line(run_command("export")(export_command), ["experiment=glasses", f"run={image_folder_run}"],
                          monkeypatch, capsys)
    assert "experiment=glasses" in line and str(image_folder_run) in line and "a run of experiment=image_folder" in line


def test_data_root_is_a_file(tmp_path):
    from pipeline.runs.run import build_datamodule

    image = tmp_path / "cat.png"
    image.write_bytes(b"")
    cfg = compose_config(["experiment=image_folder", f"data.root={image}", "data.num_workers=0"], tmp_path / "run")
    with pytest.raises(UserError, match=rf"^data.root: '{image}' is a file, not a folder"):
        build_datamodule(cfg)


# --- real command lines: what the user sees ------------------------------------------------------

def test_bin_train_wrong_values_before_any_run_folder(tmp_path):
    proc = run_cli("train.py", f"paths.results_dir={tmp_path}", "trainer.max_epochs=-1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["error: trainer.max_epochs=-1: expected an integer >= 1"]
    assert not list(tmp_path.iterdir())  # validated before Hydra made a run folder


def test_an_error_inside_a_run_is_printed_once(tmp_path, caplog, capsys):
    """exit_on_user_error inside a run: once on the console, and in the run's log file."""
    from pipeline.utils.cli import exit_on_user_error

    log_file = tmp_path / "train.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(SystemExit):
            exit_on_user_error(lambda: (_ for _ in ()).throw(UserError("data.root: broken")))()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert capsys.readouterr().err == "error: data.root: broken\n"
    assert "data.root: broken" in log_file.read_text()
    assert not [r for r in caplog.records if "broken" in r.getMessage()]  # not through the console's loggers


# --- readers: corrupt images and boxes found up front --------------------------------------------

def write_voc(root: Path, boxes: dict[str, str], empty: str | None = None) -> None:
    """A VOC folder with one small image per entry of ``boxes`` (name -> xmin); ``empty`` is a 0-byte PNG."""
    import cv2
    import numpy as np

    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name, xmin in boxes.items():
        path = root / "images" / f"{name}.png"
        if name == empty:
            path.write_bytes(b"")
        else:
            cv2.imwrite(str(path), np.full((40, 40, 3), 128, np.uint8))
        xml = (f"<annotation><filename>{name}.png</filename><size><width>40</width><height>40</height></size>"
               f"<object><name>with_mask</name><bndbox><xmin>{xmin}</xmin><ymin>2</ymin><xmax>30</xmax>"
               "<ymax>30</ymax></bndbox></object></annotation>")
        ET.ElementTree(ET.fromstring(xml)).write(root / "annotations" / f"{name}.xml")


@pytest.mark.parametrize("xmin", ["nan", "inf", "abc"])
def test_voc_box_not_a_number(tmp_path, xmin, caplog):
    from pipeline.data.formats.voc import read_voc_dataset

    write_voc(tmp_path, {"a": "2", "b": xmin})
    with pytest.raises(UserError, match=rf"^{tmp_path / 'annotations' / 'b.xml'}: <xmin> is missing or not a finite number"):
        read_voc_dataset(tmp_path, ["with_mask"])
    images = read_voc_dataset(tmp_path, ["with_mask"], skip_bad_files=True)
    assert [image.image_path.name for image in images] == ["a.png"]
    assert any("b.xml" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


TINY = {
    "facemask_detection": ["data.synthetic.num_images=16", "data.synthetic.image_size=64", "data.image_size=64"],
    "face_verification": ["data.synthetic.num_identities=6", "hyp.batch_size=6"],
}


def dataset_paths(datamodule) -> list[Path]:
    """The image files of every split."""
    datasets = [datamodule.datasets[split] for split in ("train", "val", "test")]
    return [getattr(item, "image_path", None) or item.path for ds in datasets
            for item in getattr(ds, "records", None) or ds.images]


@pytest.mark.parametrize("experiment", TINY)
def test_empty_image_is_found_up_front(experiment, tmp_path, data_dir, caplog):
    """A 0-byte image: one line naming it before training, or skipped with a warning and the rest loads."""
    import shutil

    from pipeline.data.io import list_images
    from pipeline.runs.run import build_datamodule

    tiny = [f"experiment={experiment}", "data.num_workers=0", *TINY[experiment]]
    source = build_datamodule(compose_config(tiny, tmp_path / "a", data_dir))
    root = tmp_path / "set"
    shutil.copytree(source.synthetic_root() if experiment == "face_verification" else source.data_root, root)
    count = len(dataset_paths(source))
    bad = list_images(root / "images")[-1]
    bad.write_bytes(b"")  # a 0-byte image file
    with pytest.raises(UserError, match=rf"^{bad}: not a readable image"):
        build_datamodule(compose_config([*tiny, f"data.root={root}"], tmp_path / "b"))
    datamodule = build_datamodule(compose_config([*tiny, f"data.root={root}", "data.skip_bad_files=true"], tmp_path / "c"))
    loaded = dataset_paths(datamodule)
    assert len(loaded) == count - 1 and bad not in loaded
    assert any(str(bad) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
