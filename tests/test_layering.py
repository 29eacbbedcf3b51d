"""The import contract of ARCHITECTURE.md, checked on the source (like harlequin's import tests)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIBLINGS = {"fedctl", "federation", "shard", "router", "tui", "loadtest", "examples"}
# fedctl/ is the composition root: it may import everything (lazily) and nothing imports it.
# In-process component benchmarks live in benchmarks/, outside the layered packages.
FORBIDDEN = {
    "federation": {"fedctl", "shard", "router", "tui", "loadtest", "examples"},
    "shard": {"fedctl", "router", "tui", "loadtest", "examples", "textual"},
    "router": {"fedctl", "shard", "tui", "loadtest", "examples", "textual"},
    "tui": {"fedctl", "shard", "router", "loadtest"},
    "loadtest": {"fedctl", "shard", "router", "tui", "textual"},
}
EXEMPT: set[str] = set()


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layers(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in EXEMPT:
            continue
        bad = imported_top_levels(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{rel} imports {sorted(bad)}")
    assert not offenders, "layering violated:\n" + "\n".join(offenders)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import os\nfrom shard.scheduler import SchedulerCore\nimport router.server as r\n")
    assert imported_top_levels(bad) == {"os", "shard", "router"}
