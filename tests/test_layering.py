"""The import contract of ARCHITECTURE.md, checked on the source (like harlequin's import tests)."""

from __future__ import annotations

import ast
import subprocess
import sys
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


# -- import hygiene (harlequin's test_import_hygiene.py is the model) ------------------------------
#: third-party libraries that touch the outside world, and the only modules that may import them
BOUNDARIES = {
    "zmq": {"federation/transport.py", "federation/keys.py", "shard/server.py", "router/server.py"},
    "msgpack": {"federation/wire.py", "shard/store.py"},
    "sqlalchemy": {
        "shard/store.py",
        "loadtest/servers.py",
        "loadtest/bench_router.py",
        "loadtest/bench_shard_e2e.py",
    },
    "psycopg2": {"shard/store.py"},
    "tornado": {"router/http.py"},
}
#: textual belongs to tui/ alone, and even there not to its pure modules
TEXTUAL_FREE = {"tui/model.py", "tui/config.py", "tui/source.py"}
LAYERED = ("fedctl", "federation", "shard", "router", "tui", "loadtest", "examples")


def _modules() -> list[tuple[str, set[str]]]:
    return [
        (path.relative_to(ROOT).as_posix(), imported_top_levels(path))
        for package in LAYERED
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def test_only_boundary_modules_import_io_libraries() -> None:
    offenders = []
    for rel, names in _modules():
        for lib, allowed in BOUNDARIES.items():
            if lib in names and rel not in allowed:
                offenders.append(f"{rel} imports {lib} (only {sorted(allowed)} may)")
        if "textual" in names and (not rel.startswith("tui/") or rel in TEXTUAL_FREE):
            offenders.append(f"{rel} imports textual")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("shard.scheduler", ["zmq", "sqlalchemy", "msgpack", "psycopg2", "luigi", "tornado"]),
        ("shard.federated", ["zmq", "sqlalchemy", "psycopg2"]),
        ("router.core", ["zmq", "sqlalchemy", "textual"]),
        ("federation.placement", ["zmq", "sqlalchemy", "msgpack", "luigi"]),
        ("federation.config", ["zmq", "sqlalchemy", "msgpack"]),
        ("tui.model", ["textual", "zmq"]),
        ("fedctl.cli", ["zmq", "sqlalchemy", "textual", "loadtest", "pandas", "shard", "router", "tui"]),
    ],
)
def test_importing_a_module_loads_no_more_than_it_needs(module: str, absent: list[str]) -> None:
    code = f"import sys, {module}; print(' '.join(sorted(m for m in {absent!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import {module} loaded {out.stdout.strip()}"


def test_fedctl_help_imports_neither_the_load_test_nor_textual() -> None:
    code = (
        "import sys\nfrom fedctl.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', ' '.join(sorted(m for m in ('loadtest', 'textual', 'pandas', 'zmq') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "loadtest" in out.stdout  # the command is listed...
    assert out.stdout.strip().splitlines()[-1] == "LOADED", out.stdout  # ...without importing it
