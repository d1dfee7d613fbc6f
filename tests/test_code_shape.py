"""The code base's shape rules that review keeps: no function longer than 50 lines in pipeline/ and bin/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_function_over_50_lines():
    long = []
    for path in sorted(p for p in [*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "bin").rglob("*.py")] if p.is_file()):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 50:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def _lightning_classes(folder: Path) -> list[tuple[str, ast.ClassDef]]:
    """Classes of ``folder`` deriving, directly or through other classes of pipeline/, from LightningModule or
    LightningDataModule (the names are matched: the bases' simple or dotted names)."""
    classes = {}
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base).rpartition(".")[2] for base in node.bases]
                classes.setdefault(node.name, []).append((path, node, bases))

    def lightning(name: str, seen: frozenset = frozenset()) -> bool:
        if name in ("LightningModule", "LightningDataModule"):
            return True
        return name not in seen and any(lightning(base, seen | {name}) for _, _, bases in classes.get(name, ())
                                        for base in bases)

    return [(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node) for entries in classes.values()
            for path, node, _ in entries if path.is_relative_to(folder) and lightning(node.name)]


def test_no_task_or_datamodule_over_15_methods():
    found = [*_lightning_classes(ROOT / "pipeline" / "trainers"), *_lightning_classes(ROOT / "pipeline" / "data")]
    assert {"BaseTask", "ClassificationTask", "BaseDataModule", "ImageClassificationDataModule"} <= {node.name for _, node in found}
    big = [f"{where} ({count} methods)" for where, node in found
           if (count := sum(isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) for child in node.body)) > 15]
    assert not big, big
