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
    assert set(moves[0]["moves"]) == {"s0", "s1", "s2"} and all(
        list(v) == ["s3"] for v in moves[0]["moves"].values()
    )
    assert all(list(v) == ["f0"] for v in moves[1]["moves"].values())
    assert list(moves[2]["moves"]) == ["s1"]


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
