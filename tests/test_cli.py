"""fedctl as a user meets it: help texts, and mistakes as one clear line on stderr, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.procs import ROOT, fed_env


def fedctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedctl", *args],
        env=fed_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "cmd",
    [
        [],
        ["shard", "serve"],
        ["run"],
        ["router", "serve"],
        ["up"],
        ["demo"],
        ["status"],
        ["tui"],
        ["loadtest", "run"],
        ["loadtest", "compare"],
    ],
)
def test_every_command_has_help(cmd: list[str]) -> None:
    r = fedctl(*cmd, "--help")
    assert r.returncode == 0 and "usage: fedctl" in r.stdout


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedctl: error:"), r.stderr
    return lines[0]


def test_shard_serve_without_a_store(tmp_path: Path) -> None:
    assert "--db" in one_line_error(fedctl("shard", "serve", "--id", "s0"))


def test_bad_store_url_and_bad_shard_id(tmp_path: Path) -> None:
    assert "s0" in one_line_error(fedctl("shard", "serve", "--id", "s0", "--db", "mysql://nope/x"))
    assert "shard" in one_line_error(
        fedctl("shard", "serve", "--id", "bad id!", "--db", f"sqlite:///{tmp_path}/x.db")
    )


def test_bad_config_reports_every_problem_with_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "federation.toml"
    cfg.write_text(
        'bogus = 1\n[[shards]]\nid = "s0"\nendpoint = "nonsense"\nstore = "sqlite:///x.db"\n'
        '[scheduler]\nretry_delay = "soon"\n'
    )
    line = one_line_error(fedctl("router", "serve", "--config", str(cfg)))
    assert str(cfg) in line and "bogus" in line and "endpoint" in line and "retry_delay" in line


def test_config_that_is_not_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "federation.toml"
    cfg.write_text("[[shards\n")
    assert "TOML" in one_line_error(
        fedctl("shard", "serve", "--id", "s0", "--db", f"sqlite:///{tmp_path}/s.db", "--config", str(cfg))
    )


def test_status_of_a_router_that_is_not_there() -> None:
    line = one_line_error(fedctl("status", "--router", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5"))
    assert "federation_health" in line


def test_a_second_shard_process_on_the_same_store_is_refused(tmp_path: Path) -> None:
    from tests.procs import ShardProcess

    first = ShardProcess("s0", f"sqlite:///{tmp_path}/s0.db").start()
    try:
        line = one_line_error(
            fedctl(
                "shard",
                "serve",
                "--id",
                "s0",
                "--bind",
                f"tcp://127.0.0.1:{free_port()}",
                "--db",
                f"sqlite:///{tmp_path}/s0.db",
            )
        )
        assert "already served" in line
    finally:
        first.stop()
