"""The ``face-pipeline`` console script: one command name for every script in ``bin/``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.commands import BIN, COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_the_console_script_is_declared_and_names_every_script():
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+; the project supports 3.10)
    assert '[project.scripts]\nface-pipeline = "pipeline.commands:main"\n' in text
    on_disk = {p.stem for p in BIN.glob("*.py")}
    assert set(COMMANDS.values()) == on_disk, "every bin/ script has a sub-command, and nothing else"


def test_help_lists_every_command_and_an_unknown_one_is_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS) and "missing" not in out
    with pytest.raises(SystemExit) as done:
        main(["trian"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and "unknown command 'trian'" in err


def test_a_sub_command_runs_its_script_with_its_arguments(tmp_path):
    # `runs` on an empty results folder: the script's own message, exit code and argument handling.
    done = subprocess.run([sys.executable, "-m", "pipeline.commands", "runs", f"paths.results_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    direct = subprocess.run([sys.executable, str(BIN / "runs.py"), f"paths.results_dir={tmp_path}"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (direct.returncode, direct.stdout, direct.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_sub_command_has_its_help(command):
    script = Path(sys.executable).parent / "face-pipeline"
    args = [str(script)] if script.is_file() else [sys.executable, "-m", "pipeline.commands"]
    done = subprocess.run([*args, command, "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    own = f"bin/{COMMANDS[command]}.py"  # the script's own usage, or Hydra's help of its app
    assert own in done.stdout or "powered by hydra" in done.stdout.lower(), done.stdout[:500]
