"""The product never imports the test harness, and its imports point one way (issue 16): base, then the video path,
coordination and storage side by side, then the top (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("actors", "cluster", "storage", "failover")


def imported_modules(path: Path, packages: tuple[str, ...] = ()) -> list[str]:
    """Every module ``path`` imports, at module level, in functions and under TYPE_CHECKING alike; ``from P import
    x`` names ``P.x`` for P in ``packages`` (x is a module of that package), ``P`` otherwise."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in packages:
                names += [f"{node.module}.{a.name}" for a in node.names]
            else:
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


# --- layers that point one way (issue 16) ------------------------------------------------------------------------
# The base: config, errors, the security identity and the data types every layer shares. It imports nothing of ours
# outside the base. The folders stay as the design names them; the base is this list of modules across them.
BASE = frozenset(
    {
        "cluster.errors",
        "cluster.redact",
        "cluster.credentials",
        "cluster.config_checks",
        "cluster.lens_config",
        "cluster.config",
        "cluster.pki",
        "cluster.fencing",
        "cluster.unsafe",
        "actors.events",
        "actors.detections",
        "actors.lens",
    }
)
# The three middle layers: each imports the base and itself only, except the video path handing its events to the
# segment writer (and signing them).
MIDDLE = {"actors": "video", "storage": "storage", "failover": "coordination"}
ALLOWED_ACROSS = {("video", "storage.segments"), ("video", "storage.signing")}
# The top: every other module of cluster/ (the node agent, the pair, the drills, the CLI) may import anything.


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def layer_of(module: str) -> str:
    """base, video, storage, coordination or top."""
    if module in BASE:
        return "base"
    return MIDDLE.get(module.split(".")[0], "top")


def product_imports(path: Path) -> list[str]:
    """The product modules ``path`` imports (``from cluster import unsafe`` is the module ``cluster.unsafe``)."""
    return [n for n in imported_modules(path, PRODUCT) if n.split(".")[0] in PRODUCT and n not in PRODUCT]


def layering_breaks(modules: list[tuple[str, Path]]) -> list[str]:
    """Each import of ``modules`` (name, file) that points the wrong way: ``module -> imported (layer -> layer)``."""
    bad = []
    for me, path in modules:
        mine = layer_of(me)
        if mine == "top":
            continue
        for target in product_imports(path):
            theirs = layer_of(target)
            if theirs == mine or (theirs == "base" and mine != "base") or (mine, target) in ALLOWED_ACROSS:
                continue
            bad.append(f"{me} -> {target} ({mine} -> {theirs})")
    return bad


def test_every_import_points_down_or_within_its_layer() -> None:
    paths = sorted(p for package in PRODUCT for p in (REPO / package).rglob("*.py"))
    assert len(paths) > 90  # the walk sees the whole product
    assert layering_breaks([(module_name(p), p) for p in paths]) == []


def test_the_layering_check_catches_an_import_that_points_up(tmp_path: Path) -> None:
    """The check itself can fail: one wrong import per layer, each checked under a module name of that layer."""
    cases = [
        ("storage.zz_probe", "from actors.worker import CameraWorker\n"),
        ("failover.zz_probe", "def f():\n    from storage import catalog\n"),
        ("actors.zz_probe", "import cluster.node\nfrom storage import segments\n"),  # segments: allowed across
        (
            "cluster.config_checks",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from failover.dcs import X\n",
        ),
        ("cluster.zz_top", "import cluster.node\nfrom storage import catalog\n"),  # the top imports anything
    ]
    modules = []
    for i, (name, text) in enumerate(cases):
        fake = tmp_path / f"m{i}.py"
        fake.write_text(text)
        modules.append((name, fake))
    assert layering_breaks(modules) == [
        "storage.zz_probe -> actors.worker (storage -> video)",
        "failover.zz_probe -> storage.catalog (coordination -> storage)",
        "actors.zz_probe -> cluster.node (video -> top)",
        "cluster.config_checks -> failover.dcs (base -> coordination)",
    ]
