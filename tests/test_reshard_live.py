"""Online resharding with real processes under the load test (``loadtest/reshard_live.py``).

A 3-shard federation (``fedctl router serve`` and ``fedctl shard serve`` processes, SQLite)
runs the load test while ``fedctl reshard apply`` grows it to 4 shards, moves ``fin`` to a group
of its own, and drains ``s1``: every move finishes and every check of the load test passes
(each task granted and completed exactly once, never before its dependencies, final state).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.reshard_live import main


@pytest.mark.e2e
def test_grow_move_a_namespace_and_drain_under_load(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    code = main(
        [
            "--days",
            "8",
            "--topics",
            "10",
            "--task-ms",
            "100",
            "--start-after",
            "40",
            "--pause",
            "0.5",
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert code == 0, result
    assert result["checks_ok"], result["checks"]
    moves = result["moves"]
    assert [m["to"] for m in moves] == ["grow.toml", "unit.toml", "drain.toml"]
    assert all(m["ok"] and m["moved"] > 0 for m in moves)
    sources = [{s: m for s, m in move["moves"].items() if m} for move in moves]
    assert set(sources[0]) == {"s0", "s1", "s2"} and all(list(m) == ["s3"] for m in sources[0].values())
    assert all(list(m) == ["f0"] for m in sources[1].values())
    assert list(sources[2]) == ["s1"] and set(sources[2]["s1"]) <= {"s0", "s2", "s3"}, moves


def test_fedctl_reshard_refuses_a_bad_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "new.toml"
    bad.write_text('[[shards]]\nid = "s0"\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedctl",
            "reshard",
            "plan",
            "--to",
            str(bad),
            "--router",
            "tcp://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("fedctl: error:") and "endpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
