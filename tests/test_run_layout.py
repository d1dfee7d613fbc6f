"""The run folder's paths are spelt in one place, ``pipeline.runs.layout``: no other module of ``pipeline/`` or
``bin/`` names them in code (docstrings and comments may)."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from pipeline.runs.layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]
# Folders and files of a run folder that code finds by name.
RUN_PATHS = {".hydra", "config.yaml", "hydra.yaml", "overrides.yaml", "config.pickle", "checkpoints", "last.ckpt",
             "results", "metrics.json", "test_metrics.json", "metrics_history.json", "run_state.json", "init_from.json",
             "split.json", "detection_threshold.json", "benchmark.json", "tensorboard", "tests", ".lock", "export", "predictions", "test.log"}

KEPT = ("results", "tensorboard", "checkpoints", ".hydra")  # what a re-test leaves byte for byte


def folder_hashes(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every file under the run's ``KEPT`` folders (a link: its target's name), by relative path."""
    return {str(path.relative_to(run_dir)): str(path.readlink()) if path.is_symlink() else
            hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in KEPT for path in sorted((run_dir / folder).rglob("*")) if path.is_file() or path.is_symlink()}


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def path_operands(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are, or may be, joined as path parts: operands of ``/``, arguments of
    ``Path(...)`` and constants given a name (``EXPORT_DIR = "export"``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found |= {id(side) for side in (node.left, node.right)}
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("Path", "joinpath"):
            found |= {id(arg) for arg in node.args}
        elif isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
            found.add(id(node.value))
    return found


def is_run_path(text: str, joined: bool) -> bool:
    """A run path joined as a part (``run / "results"``), or a relative path that starts with one (``"results/x"``)."""
    parts = [part for part in text.split("/") if part]
    return bool(parts) and (joined and text in RUN_PATHS or len(parts) > 1 and parts[0] in RUN_PATHS)


def spelt_paths(path: Path) -> list[str]:
    """``file:line: literal`` for every string constant in code (not a docstring) that spells a run path."""
    tree = ast.parse(path.read_text(), str(path))
    skip, joined = docstrings(tree), path_operands(tree)
    return [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
            and is_run_path(node.value, id(node) in joined)]


def test_no_module_outside_the_runs_package_spells_a_run_path():
    files = [p for folder in ("pipeline", "bin") for p in (ROOT / folder).rglob("*.py")
             if p.is_file() and not p.is_relative_to(ROOT / "pipeline" / "runs")]
    hits = [hit for path in sorted(files) for hit in spelt_paths(path)]
    assert not hits, "run-folder paths spelt outside pipeline/runs (use RunLayout):\n" + "\n".join(hits)


def test_the_check_finds_spelt_paths_and_not_other_words(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    sample = tmp_path / "sample.py"
    sample.write_text('''"""Writes results/metrics.json (a docstring may say so)."""
EXPORT = "export"
def f(run):
    logger = getLogger("tensorboard")
    return run / "checkpoints", f"{run}/results/x.json", Path("tests"), "val/predictions"
''')
    assert sorted(hit.split(": ", 1)[1] for hit in spelt_paths(sample)) == \
        ["'/results/x.json'", "'checkpoints'", "'export'", "'tests'"]


def test_layout_paths_lie_in_the_run_and_a_test_folder_in_tests(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.last_ckpt.parent == layout.checkpoints and layout.metrics.parent == layout.results
    test = layout.test_folder("epoch002")
    assert test.root.parent == layout.tests and test.root.name.startswith("epoch002_")
    assert test.test_metrics.is_relative_to(layout.tests) and test.tensorboard.is_relative_to(test.root)
