"""Issue 29: a run folder is data in its links too; every remaining traceback is one line.

Each probe that could hang or write outside the run runs under a timeout (a subprocess) or checks the
outside folder afterwards.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli
from omegaconf import OmegaConf
from PIL import Image

from pipeline.data.formats.image_folder import read_image_csv
from pipeline.data.prediction_inputs import read_image_pairs
from pipeline.delivery.runs import Run
from pipeline.utils.cli import describe_error
from pipeline.utils.errors import UserError
from pipeline.utils.files import AtomicCheckpointIO
from pipeline.utils.run_table import find_runs, read_json
from pipeline.utils.runs import run_lock

TOY = [f"hydra.searchpath=[file://{ROOT / 'tests' / 'toy' / 'configs'}]", "experiment=brightness", "logger=none"]
TIMEOUT = 120  # a probe that hangs (a YAML bomb) fails the test instead of the suite
BOMB = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    proc = run_cli("train.py", *TOY, f"paths.results_dir={results}", "trainer.max_epochs=1", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (results / "brightness").iterdir()
    return run


@pytest.fixture
def run(toy_run, tmp_path) -> Path:
    copy = tmp_path / "results" / "brightness" / toy_run.name
    shutil.copytree(toy_run, copy, symlinks=True)
    return copy


@pytest.fixture
def outside(tmp_path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim").write_text("precious")
    return folder


def untouched(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == ["victim"] and (folder / "victim").read_text() == "precious"


def cli(script: str, *args: str) -> subprocess.CompletedProcess:
    try:
        return run_cli(script, *args, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"bin/{script} {' '.join(args)} hung for {TIMEOUT} s")


def one_line_error(proc, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def plant(run: Path, key: str, node) -> None:
    config = run / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    OmegaConf.update(cfg, key, node, force_add=True)
    config.write_text(OmegaConf.to_yaml(cfg))


# 1. A .lock symlink overwrites nothing.
def test_a_lock_symlink_overwrites_no_file(run, outside):
    (run / ".lock").symlink_to(outside / "victim")
    with pytest.raises(UserError, match=r"\.lock"):
        with run_lock(run):
            pass
    one_line_error(cli("train.py", f"resume={run}", "trainer.max_epochs=2"), ".lock")
    assert untouched(outside) and (run / ".lock").is_symlink()


# 2. Symlinked sub-folders and files of a run send no write outside it.
@pytest.mark.parametrize("name", ["export", "results", "predictions", "train.log", "checkpoints/last.ckpt"])
def test_links_out_of_the_run_are_refused_before_anything_is_written(run, outside, name):
    link = run / name
    if link.is_dir():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(outside / "victim" if "." in name else outside)
    with pytest.raises(UserError, match=name.replace(".", r"\.")):
        Run.open(run)
    assert untouched(outside)


def test_export_and_resume_refuse_a_linked_folder(run, outside):
    (run / "export").symlink_to(outside)
    one_line_error(cli("export.py", f"run={run}"), "export", str(outside))
    shutil.rmtree(run / "results")
    (run / "results").symlink_to(outside)
    one_line_error(cli("train.py", f"resume={run}", "trainer.max_epochs=2"), "results", str(outside))
    assert untouched(outside)


def test_a_link_inside_the_run_is_fine(run):
    (run / "alias").symlink_to(run / "checkpoints")
    Run.open(run)


# 3. A YAML alias bomb is refused at once.
@pytest.mark.parametrize("script", ["test.py", "train.py"])
def test_a_yaml_alias_bomb_is_one_line(run, script):
    (run / ".hydra" / "config.yaml").write_text(BOMB)
    key = "run" if script == "test.py" else "resume"
    one_line_error(cli(script, f"{key}={run}"), "config.yaml")


# 4. An allowed class gets no path outside the run.
def test_an_allowed_class_writes_nothing_outside_the_run(run, outside):
    plant(run, "callbacks.evil", {"_target_": "torch.utils.tensorboard.writer.SummaryWriter", "log_dir": str(outside)})
    with pytest.raises(UserError, match=r"callbacks\.evil\.log_dir"):
        Run.open(run)
    one_line_error(cli("train.py", f"resume={run}", "trainer.max_epochs=2"), "callbacks.evil.log_dir")
    assert untouched(outside)


def test_an_allowed_class_may_name_a_path_inside_the_run(run):
    plant(run, "callbacks.fine", {"_target_": "torch.utils.tensorboard.writer.SummaryWriter",
                                  "log_dir": str(run / "tensorboard")})
    Run.open(run)


# 5. An empty label cell is one line naming file and row.
def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)


def test_an_empty_label_cell_names_the_file_and_row(tmp_path):
    for name in ("a", "b", "c"):
        _image(tmp_path / f"{name}.png")
    csv_path = tmp_path / "shortrow.csv"
    csv_path.write_text("path,label\na.png,cat\nb.png,\nc.png,dog\n")
    with pytest.raises(UserError, match=r"shortrow\.csv:3: .*empty label"):
        read_image_csv(csv_path)
    csv_path.write_text("path,label\na.png,cat\nb.png\nc.png,dog\n")  # a short row: no label cell at all
    with pytest.raises(UserError, match=r"shortrow\.csv:3: .*empty label"):
        read_image_csv(csv_path)


# 6. Tracebacks that become one line.
def test_deep_json_reads_as_unreadable(tmp_path):
    path = tmp_path / "metrics_history.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert read_json(path, "unreadable") == "unreadable"


def test_a_python_tag_in_the_saved_config_is_one_line_and_runs_nothing(run, tmp_path):
    marker = tmp_path / "marker"
    config = run / ".hydra" / "config.yaml"
    config.write_text(f"evil: !!python/object/apply:os.system ['touch {marker}']\n" + config.read_text())
    with pytest.raises(UserError, match=r"config\.yaml"):
        Run.open(run)
    one_line_error(cli("test.py", f"run={run}"), "config.yaml")
    assert not marker.exists()


def test_runs_lists_a_broken_run_as_unreadable(run, tmp_path):
    experiment = run.parent
    for n, damage in enumerate(("tag", "bomb", "deep")):
        broken = experiment / f"{run.name}_{n + 2}"
        shutil.copytree(run, broken)
        if damage == "tag":
            (broken / ".hydra" / "config.yaml").write_text("a: !!python/name:os.system\n")
        elif damage == "bomb":
            (broken / ".hydra" / "config.yaml").write_text(BOMB)
        else:
            (broken / "results" / "metrics_history.json").write_text("[" * 100_000 + "]" * 100_000)
    runs = {r.name: r for r in find_runs(experiment)}
    assert len(runs) == 4
    assert runs[run.name].state == "finished"
    for n in (2, 3):
        assert runs[f"{run.name}_{n}"].state.startswith("unreadable"), runs[f"{run.name}_{n}"]
    proc = cli("runs.py", f"paths.results_dir={experiment.parent}")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "unreadable" in proc.stdout and run.name in proc.stdout


def test_a_non_utf8_folder_name_predicts(run, tmp_path):
    folder = tmp_path / "caf\udce9"  # b"caf\xe9": Latin-1 bytes, not valid UTF-8
    _image(folder / "x\udcff.png")
    out = tmp_path / "out\udce9"
    proc = cli("predict.py", f"run={run}", f"input={folder}", f"out={out}")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert any(out.iterdir())


def test_a_latin1_csv_names_the_file_and_encoding(tmp_path):
    _image(tmp_path / "a.png")
    csv_path = tmp_path / "latin.csv"
    csv_path.write_bytes("path,label\na.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin\.csv:2: not UTF-8 .*Latin-1"):
        read_image_csv(csv_path)


def test_a_single_image_for_a_pair_model_is_one_line(tmp_path):
    _image(tmp_path / "one.png")
    with pytest.raises(UserError, match=r"one\.png.*pair"):
        read_image_pairs(tmp_path / "one.png")


def test_an_unwritable_out_is_one_line(run):
    one_line_error(cli("predict.py", f"run={run}", f"input={run}", "out=/proc/nope"), "/proc/nope")


def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_much_is_free(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1}, path)
    before = path.read_bytes()

    def full(obj, target):
        Path(target).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(Exception) as caught:
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, path)
    message = describe_error(caught.value)
    assert message is not None and str(path) in message and "free" in message, message
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_full_disk_during_a_resume_is_one_line(run, tmp_path):
    """A whole resume with every ``torch.save`` failing as on a full disk (a sitecustomize in the child)."""
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(
        "import errno, torch\n"
        "def full(obj, f, *a, **k):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "torch.save = full\n")
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(patch), env_path]))
    try:
        proc = cli("train.py", f"resume={run}", "trainer.max_epochs=2")
    finally:
        os.environ["PYTHONPATH"] = env_path
    # Lightning's own warnings about the copied run's folder may come first; the failure itself is one line.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "no space left" in errors[0] and "free" in errors[0] and "checkpoints" in errors[0], errors[0]
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before


def test_serve_validates_host_before_loading_anything(run):
    one_line_error(cli("serve.py", f"run={run}", "host=999.1.1.1"), "host")
    one_line_error(cli("serve.py", f"run={run}", "port=70000"), "port")
