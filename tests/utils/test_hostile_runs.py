"""Issue 29: a run folder is data in its links too; every remaining traceback is one line.

Each probe that could hang or write outside the run runs under a timeout (a subprocess) or checks the
outside folder afterwards.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import one_line_error, plant, run_cli, run_main
from PIL import Image

from pipeline.callbacks.model_selection import AtomicCheckpointIO
from pipeline.data.formats.image_folder import read_image_csv
from pipeline.data.prediction_inputs import read_image_pairs
from pipeline.runs.folder import run_lock
from pipeline.runs.run import Run
from pipeline.runs.table import find_runs
from pipeline.utils.cli import describe_error
from pipeline.utils.errors import UserError
from pipeline.utils.files import read_json, read_yaml

TIMEOUT = 120  # a probe that hangs (a YAML bomb) fails the test instead of the suite
BOMB = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))


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
    """``bin/<script>`` in a process of its own (for what depends on the process: its console's encoding)."""
    try:
        return run_cli(script, *args, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"bin/{script} {' '.join(args)} hung for {TIMEOUT} s")


def command(script: str, *args: str) -> subprocess.CompletedProcess:
    """``bin/<script>``'s main() in this process (the same argv, exit code, stdout and stderr), bounded by TIMEOUT."""
    try:
        return bounded(functools.partial(run_main, script, *args), TIMEOUT)
    except Hang:
        pytest.fail(f"bin/{script} {' '.join(args)} hung for {TIMEOUT} s")


# 1. A .lock symlink overwrites nothing.
def test_a_lock_symlink_overwrites_no_file(run, outside):
    (run / ".lock").symlink_to(outside / "victim")
    with pytest.raises(UserError, match=r"\.lock"):
        with run_lock(run):
            pass
    one_line_error(command("train.py", f"resume={run}", "trainer.max_epochs=2"), ".lock")
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
    one_line_error(command("export.py", f"run={run}"), "export", str(outside))
    shutil.rmtree(run / "results")
    (run / "results").symlink_to(outside)
    one_line_error(command("train.py", f"resume={run}", "trainer.max_epochs=2"), "results", str(outside))
    assert untouched(outside)


def test_a_broken_link_where_a_folder_is_written_is_one_line(run):
    """Found by the slow command fuzzer: ``export -> nowhere`` (a link inside the run to nothing) made the export's
    mkdir raise FileExistsError."""
    (run / "export").symlink_to("nowhere")
    one_line_error(command("export.py", f"run={run}"), "export", "broken symbolic link")
    assert (run / "export").is_symlink() and not (run / "nowhere").exists()


@pytest.mark.parametrize("text", ["null", "[1, 2]", '"x"'])
def test_a_retest_reads_a_metrics_file_of_another_kind_as_absent(run, text):
    """Found by the slow command fuzzer: ``results/metrics.json`` holding ``null`` made ``bin/test.py`` raise
    'NoneType' object is not a mapping."""
    (run / "results" / "metrics.json").write_text(text)
    proc = command("test.py", f"run={run}")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (run / "results" / "metrics.json").read_text() == text


def test_a_link_inside_the_run_is_fine(run):
    (run / "alias").symlink_to(run / "checkpoints")
    Run.open(run)


# 3. A YAML alias bomb is refused at once.
@pytest.mark.parametrize("script", ["test.py", "train.py"])
def test_a_yaml_alias_bomb_is_one_line(run, script):
    (run / ".hydra" / "config.yaml").write_text(BOMB)
    key = "run" if script == "test.py" else "resume"
    one_line_error(command(script, f"{key}={run}"), "config.yaml")


def test_control_characters_in_a_saved_config_are_one_line(tmp_path):
    """Found by the slow run-folder fuzzer: a NUL in ``config.yaml`` raised yaml's ReaderError from the loader's
    constructor, outside the handled block."""
    config = tmp_path / "config.yaml"
    config.write_text("\x00\xff\xfe garbage")
    with pytest.raises(UserError, match=r"config\.yaml: not valid YAML") as caught:
        read_yaml(config)
    assert "\n" not in str(caught.value)


# 4. An allowed class gets no path outside the run.
def test_an_allowed_class_writes_nothing_outside_the_run(run, outside):
    plant(run, "callbacks.evil", {"_target_": "torch.utils.tensorboard.writer.SummaryWriter", "log_dir": str(outside)})
    with pytest.raises(UserError, match=r"callbacks\.evil\.log_dir"):
        Run.open(run)
    one_line_error(command("train.py", f"resume={run}", "trainer.max_epochs=2"), "callbacks.evil.log_dir")
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
    one_line_error(command("test.py", f"run={run}"), "config.yaml")
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
    proc = command("runs.py", f"paths.results_dir={experiment.parent}")
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
    one_line_error(command("predict.py", f"run={run}", f"input={run}", "out=/proc/nope"), "/proc/nope")


def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_much_is_free(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 1}, path)
    before = path.read_bytes()

    def full(obj, target):
        target.write(b"half")  # the checkpoint writer hands torch.save an open file
        target.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(Exception) as caught:
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, path)
    message = describe_error(caught.value)
    assert message is not None and str(path) in message and "free" in message, message
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_full_disk_during_a_resume_is_one_line(run, monkeypatch):
    """A whole resume with every ``torch.save`` failing as on a full disk, each after a pause, so that the checkpoint
    writer thread fails after training has moved on (linked ``last.ckpt``, removed the previous best): the run's
    checkpoints stay as they were and it resumes once the disk has room again."""
    import time

    def full(obj, f, *args, **kwargs):
        time.sleep(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    checkpoints = run / "checkpoints"
    before = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", full)
        proc = command("train.py", f"resume={run}", "trainer.max_epochs=2")
    # Lightning's own warnings about the copied run's folder may come first; the failure itself is one line.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "no space left" in errors[0] and "free" in errors[0] and "checkpoints" in errors[0], errors[0]
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == before
    proc = command("train.py", f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 1


def test_serve_validates_host_before_loading_anything(run):
    one_line_error(command("serve.py", f"run={run}", "host=999.1.1.1"), "host")
    one_line_error(command("serve.py", f"run={run}", "port=70000"), "port")


# ---- fuzzers ----------------------------------------------------------------------------------------------------
# A hostile-run-folder fuzzer: a copy of the toy run damaged in 1-3 random ways, then opened as each command opens
# it, in-process (a timer bounds each case). A case passes when it returns or stops with one user-error line, and
# nothing outside the run changed. The slow tier draws more cases and runs a sample through the real commands.

RUN_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "results/metrics_history.json",
             "results/metrics.json", "results/test_metrics.json", "results/run_state.json", "checkpoints/last.ckpt")
LINKABLE = RUN_FILES + (".lock", "export", "results", "predictions", "train.log", "checkpoints", ".hydra",
                        "tensorboard")
YAML_DAMAGE = (BOMB, "a: !!python/object/apply:os.system ['touch {marker}']\n", "a: !!python/name:os.system\n",
               "a: &x [*x]\n", "[" * 5000 + "]" * 5000, "a: b: c\n", "- 1\n- 2\n", "", "\x00\xff\xfe garbage",
               "paths: 3\n", "task: [1, 2]\n")
DEEP_JSON = "[" * 50_000 + "]" * 50_000


def damage(run: Path, outside: Path, marker: Path, rng) -> list[str]:
    """Damage ``run`` in 1-3 random ways; returns what was done."""
    done = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("link", "yaml", "json", "truncate", "bytes"))
        if kind == "link":
            name = rng.choice(LINKABLE)
            target = rng.choice((outside, outside / "victim", outside / "absent", run / "checkpoints", run / "nowhere"))
            path = run / name
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
            if path.parent.is_symlink() or (path.parent.exists() and not path.parent.is_dir()):
                continue  # an earlier damage made the folder a link or a file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
            done.append(f"link {name} -> {target.name}")
        elif kind == "yaml":
            name = rng.choice(RUN_FILES[:3])
            text = rng.choice(YAML_DAMAGE).replace("{marker}", str(marker))
            path = run / name
            if not path.is_symlink() and path.parent.is_dir() and not path.parent.is_symlink():
                keep = path.read_bytes() if path.is_file() and rng.random() < 0.5 else b""  # maybe damaged bytes
                path.write_bytes(text.encode("utf-8", "surrogateescape") + (keep if text.startswith("a:") else b""))
                done.append(f"yaml {name}: {text[:20]!r}")
        elif kind == "json":
            name = rng.choice(RUN_FILES[3:7])
            path = run / name
            if path.parent.is_dir() and not path.parent.is_symlink() and not path.is_symlink():
                path.write_text(rng.choice((DEEP_JSON, '{"a": ' * 3000, "[1, 2", '{"state": [1]}', "null", '"x"')))
                done.append(f"json {name}")
        else:
            name = rng.choice(RUN_FILES)
            path = run / name
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if kind == "truncate":
                    path.write_bytes(data[: rng.randint(0, max(len(data) - 1, 0))])
                else:
                    at = rng.randint(0, max(len(data) - 1, 0))
                    path.write_bytes(data[:at] + bytes(rng.randint(128, 255) for _ in range(8)) + data[at + 8:])
                done.append(f"{kind} {name}")
    return done


class Hang(BaseException):
    pass


def bounded(call, seconds: float):
    """``call()`` with a wall-clock bound (SIGALRM: main thread, POSIX); Hang when it runs past it."""
    import signal

    def alarm(*_):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def open_as(operation: str, run: Path):
    """What each command does with a run folder before its own work, in-process."""
    from pipeline.delivery.export import ensure_export

    if operation == "runs":
        from pipeline.runs.table import runs_rows
        return runs_rows(find_runs(run.parent))
    if operation == "resume":
        return Run.from_command_line([f"resume={run}", "trainer.max_epochs=2"])
    opened = Run.open(run, ["data.num_workers=0"])
    if operation in ("test", "predict"):
        return opened.task("best" if operation == "test" else "last")
    if operation == "export":
        return ensure_export(opened)
    if operation == "serve":
        from pipeline.delivery.serve import create_app
        return create_app(opened)
    return opened


OPERATIONS = ("runs", "resume", "test", "predict", "export", "serve")


def classify(call, seconds: int, label: str, tally: dict[str, int], problems: list[str]) -> None:
    """Run one fuzz case under a time bound: a return or a one-line user error counts in ``tally``; a hang,
    a traceback-worthy exception or a multi-line message is a problem named by ``label``."""
    from pipeline.utils.cli import describe_error as describe

    try:
        bounded(call, seconds)
        tally["returned"] += 1
    except Hang:
        problems.append(f"{label}: hung")
    except Exception as exc:  # noqa: BLE001 - classified: one line, or a bug
        message = describe(exc)
        if message is None or "\n" in message:
            problems.append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
        else:
            tally["user_error"] += 1


def fuzz_run_folders(toy_run: Path, tmp_path: Path, cases: int, seed: int) -> dict[str, int]:
    import random

    rng = random.Random(seed)
    tally = {"cases": 0, "returned": 0, "user_error": 0}
    problems = []
    for case in range(cases):
        base = tmp_path / f"case{case}"
        run, outside, marker = base / "results" / "brightness" / toy_run.name, base / "outside", base / "marker"
        shutil.copytree(toy_run, run, symlinks=True)
        outside.mkdir()
        (outside / "victim").write_text("precious")
        done = damage(run, outside, marker, rng)
        operation = OPERATIONS[case % len(OPERATIONS)] if case < len(OPERATIONS) else rng.choice(OPERATIONS)
        classify(functools.partial(open_as, operation, run), 60, f"case {case} {operation} {done}", tally, problems)
        if not untouched(outside) or marker.exists():
            problems.append(f"case {case} {operation} {done}: wrote outside the run ({sorted(os.listdir(outside))})")
        tally["cases"] += 1
        shutil.rmtree(base, ignore_errors=True)
    print(f"hostile-run fuzz (seed {seed}): {tally}")
    assert not problems, "\n".join(problems[:10])
    return tally


@pytest.mark.usefixtures("restore_root_logging")
def test_fuzz_hostile_run_folders(toy_run, tmp_path):
    tally = fuzz_run_folders(toy_run, tmp_path, cases=36, seed=29)
    assert tally["user_error"] > 0 and tally["returned"] > 0  # the draw reaches both outcomes


@pytest.mark.slow
@pytest.mark.usefixtures("restore_root_logging")
def test_fuzz_hostile_run_folders_longer(toy_run, tmp_path):
    fuzz_run_folders(toy_run, tmp_path, cases=400, seed=2929)


@pytest.mark.slow
def test_fuzz_hostile_run_folders_through_the_commands(toy_run, tmp_path):
    """A sample through the real commands (subprocesses, each under TIMEOUT): exit 0, or exit 2 with one line."""
    import random

    rng = random.Random(7)
    commands = [("train.py", "resume={run}", "trainer.max_epochs=2"), ("test.py", "run={run}"),
                ("export.py", "run={run}"), ("runs.py", "paths.results_dir={results}")]
    for case in range(12):
        base = tmp_path / f"case{case}"
        run, outside = base / "results" / "brightness" / toy_run.name, base / "outside"
        shutil.copytree(toy_run, run, symlinks=True)
        outside.mkdir()
        (outside / "victim").write_text("precious")
        done = damage(run, outside, base / "marker", rng)
        script, *args = commands[case % len(commands)]
        proc = cli(script, *(a.format(run=run, results=base / "results") for a in args))
        assert "Traceback" not in proc.stderr and proc.returncode in (0, 2), (done, proc.stderr[-2000:])
        assert untouched(outside) and not (base / "marker").exists(), done


# A data-format fuzzer over every reader: files in other encodings, empty and missing cells, odd names.

def _write_text(path: Path, text: str, encoding: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding, errors="replace"))


def data_case(root: Path, rng) -> tuple[str, object]:
    """A small dataset in one of the readers' formats, damaged at random; returns (reader name, call)."""
    from pipeline.data.face_parts import read_landmarks_csv
    from pipeline.data.formats.boostcamp import (
        load_label_corrections,
        read_boostcamp_eval,
        read_boostcamp_train,
    )
    from pipeline.data.formats.meglass import read_meglass
    from pipeline.data.formats.verification import read_pairs_csv, read_verification
    from pipeline.data.formats.voc import read_voc_dataset
    from pipeline.data.prediction_inputs import read_images, read_row_pairs
    from pipeline.data.splits import read_split_file

    encoding = rng.choice(("utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"))
    odd = rng.choice(("plain", "caf\u00e9", "sp ace", "q'uote", "com,ma", "caf\udce9"))
    name = f"{odd}.png"
    try:
        _image(root / name)
    except (UnicodeEncodeError, OSError):
        name = "plain.png"
        _image(root / name)
    label = rng.choice(("cat", "", "caf\u00e9", "0", "1", " "))
    short = rng.random() < 0.3
    csv_name = name.replace('"', "")
    row = f'"{csv_name}"' if "," in csv_name else csv_name
    reader = rng.choice(("image_csv", "predict_csv", "pairs_csv", "row_pairs", "split", "meglass", "voc",
                         "verification", "landmarks", "boostcamp_eval", "boostcamp_train", "corrections"))
    if reader in ("image_csv", "predict_csv", "row_pairs"):
        text = f"path,label\n{row},cat\n{row}{'' if short else ',' + label}\n"
        _write_text(root / "data.csv", text, encoding)
        call = {"image_csv": lambda: read_image_csv(root / "data.csv", skip_bad_files=rng.random() < 0.5),
                "predict_csv": lambda: read_images(root / "data.csv"),
                "row_pairs": lambda: read_row_pairs(root / "data.csv")}[reader]
    elif reader == "pairs_csv":
        _write_text(root / "pairs.csv", f"path1,path2\n{row}{'' if short else ',' + row}\n", encoding)
        call = lambda: (read_pairs_csv(root / "pairs.csv", "path1"), read_image_pairs(root / "pairs.csv"))  # noqa: E731
    elif reader == "split":
        suffix = rng.choice((".csv", ".json"))
        text = f"path,split\n{row},{label or 'train'}\n" if suffix == ".csv" else json.dumps({"train": [name]})
        _write_text(root / f"split{suffix}", text, encoding)
        call = lambda: read_split_file(root / f"split{suffix}")  # noqa: E731
    elif reader == "meglass":
        _write_text(root / "list.txt", f"{name} {label}\n", encoding)
        call = lambda: read_meglass(root / "list.txt")  # noqa: E731
    elif reader == "voc":
        xml = (f"<annotation><filename>{name}</filename><size><width>8</width><height>8</height></size>"
               f"<object><name>{label or 'face'}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>6</xmax>"
               "<ymax>6</ymax></bndbox></object></annotation>")
        (root / "images").mkdir()
        shutil.move(root / name, root / "images" / name)
        _write_text(root / "annotations" / f"{Path(name).stem}.xml", xml, encoding)
        call = lambda: read_voc_dataset(root, ["face"], skip_bad_files=rng.random() < 0.5)  # noqa: E731
    elif reader == "verification":
        (root / "images" / odd).mkdir(parents=True)
        shutil.move(root / name, root / "images" / odd / name)
        _write_text(root / "meta.json", json.dumps({f"{odd}/{name}": label or 0}, ensure_ascii=False), encoding)
        call = lambda: read_verification(root)  # noqa: E731
    elif reader == "landmarks":
        _write_text(root / "landmarks.csv", f"path,x0,y0\n{row},{label or ''},1\n", encoding)
        call = lambda: read_landmarks_csv(root / "landmarks.csv")  # noqa: E731
    elif reader == "boostcamp_eval":
        (root / "eval" / "images").mkdir(parents=True)
        shutil.move(root / name, root / "eval" / "images" / name)
        _write_text(root / "eval" / "info.csv", f"ImageID,ans\n{row}{'' if short else ',' + label}\n", encoding)
        call = lambda: read_boostcamp_eval(root)  # noqa: E731
    elif reader == "boostcamp_train":
        _write_text(root / "train" / "train.csv", f"id,gender,race,age,path\n000001,{label or 'female'},Asian,"
                    f"{'' if short else '45'},{odd}\n", encoding)
        (root / "train" / "images" / odd).mkdir(parents=True)
        call = lambda: read_boostcamp_train(root, skip_bad_files=rng.random() < 0.5)  # noqa: E731
    else:
        _write_text(root / "corrections.yaml", f"gender:\n  '000001': {label or 'female'}\n", encoding)
        call = lambda: load_label_corrections(root / "corrections.yaml")  # noqa: E731
    return f"{reader} {encoding} {odd!r} label={label!r} short={short}", call


def fuzz_readers(tmp_path: Path, cases: int, seed: int) -> dict[str, int]:
    import random

    rng = random.Random(seed)
    tally = {"cases": 0, "returned": 0, "user_error": 0}
    problems = []
    for case in range(cases):
        root = tmp_path / f"data{case}"
        root.mkdir()
        what, call = data_case(root, rng)
        classify(call, 30, f"case {case} {what}", tally, problems)
        tally["cases"] += 1
        shutil.rmtree(root, ignore_errors=True)
    print(f"data-format fuzz (seed {seed}): {tally}")
    assert not problems, "\n".join(problems[:10])
    return tally


def test_fuzz_data_readers(tmp_path):
    tally = fuzz_readers(tmp_path, cases=150, seed=29)
    assert tally["user_error"] > 0 and tally["returned"] > 0


@pytest.mark.slow
def test_fuzz_data_readers_longer(tmp_path):
    fuzz_readers(tmp_path, cases=2000, seed=2929)


def test_a_non_utf8_folder_name_inspects(tmp_path):
    root = tmp_path / "caf\udce9"  # folder, class and file names that are not UTF-8
    for name in ("cat", "dog\udcff"):
        for i in range(4):
            Image.new("RGB", (16, 16), (40 * i, 200 if name == "cat" else 10, 90)).save(_parent(root / name / f"i{i}\udce9.png"))
    proc = cli("inspect_data.py", "experiment=image_folder", f"data.root={root}", "data.num_workers=0",
               f"out_dir={tmp_path / 'report'}")
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert b"dog\xff" in (tmp_path / "report" / "data_report.md").read_bytes()  # the name's own bytes


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
