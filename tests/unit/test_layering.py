"""The product's packages never import the test harness (issue 16: test code stays under tests/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("actors", "cluster", "storage", "failover")


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("import os\ndef g():\n    from tests.harness.pair import Pair\n    import tests.rtsp\n")
    assert imported_modules(f) == ["os", "tests.harness.pair", "tests.rtsp"]


@pytest.mark.parametrize("package", PRODUCT)
def test_no_product_module_imports_tests(package: str) -> None:
    bad = [
        f"{p.relative_to(REPO)}: {m}"
        for p in sorted((REPO / package).rglob("*.py"))
        for m in imported_modules(p)
        if m == "tests" or m.startswith("tests.")
    ]
    assert bad == []
