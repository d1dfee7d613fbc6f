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
