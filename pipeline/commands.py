"""``face-pipeline <command> [key=value ...]``: one command name for the scripts in ``bin/``.

``face-pipeline train model=resnet18`` is ``python bin/train.py model=resnet18``, and so on for every
command; ``face-pipeline --help`` lists them, ``face-pipeline <command> --help`` is the command's own help.
The scripts are run from the project's ``bin/`` folder (a clone, installed with ``pip install -e .``).
"""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

BIN = Path(__file__).resolve().parents[1] / "bin"
# Sub-command -> script in bin/ (``inspect`` is not a script name: it would shadow Python's own module).
COMMANDS = {"train": "train", "test": "test", "predict": "predict", "export": "export", "serve": "serve",
            "benchmark": "benchmark", "runs": "runs", "inspect": "inspect_data"}
USAGE = "usage: face-pipeline <command> [key=value ...] [--help]"


def summary(script: Path) -> str:
    """The first sentence of a script's docstring, read without importing it."""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    return doc.split(": ``")[0].split("\n")[0].rstrip(":. ")


def listing() -> str:
    lines = [USAGE, "", "commands:"]
    for name, script in COMMANDS.items():
        path = BIN / f"{script}.py"
        lines.append(f"  {name:<10} {summary(path) if path.is_file() else '(missing: ' + str(path) + ')'}")
    return "\n".join(lines + ["", "`face-pipeline <command> --help` shows a command's options."])


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(listing())
        sys.exit(0 if args else 2)
    if args[0] not in COMMANDS:
        print(f"error: face-pipeline: unknown command '{args[0]}' (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        sys.exit(2)
    script = BIN / f"{COMMANDS[args[0]]}.py"
    if not script.is_file():
        print(f"error: face-pipeline: no script {script}: the commands run from a clone installed with "
              "`pip install -e .` (or use `python bin/<command>.py` in the clone)", file=sys.stderr)
        sys.exit(2)
    sys.argv = [str(script), *args[1:]]  # the script reads its own command line, as when started directly
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
