"""`fedctl up`, `fedctl status`, `fedctl run` and the unmodified `luigi` command, end to end."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import free_port
from tests.procs import ROOT, call_ok, fed_env, wait_for

pytestmark = pytest.mark.e2e


class Up:
    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.zmq = f"tcp://127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.data_dir = tmp_path / "fed"
        self.log = tmp_path / "up.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedctl",
                "up",
                "--shards",
                "3",
                "--data-dir",
                str(self.data_dir),
                "--zmq",
                self.zmq,
                "--http",
                self.http,
                *extra,
            ],
            env=fed_env(),
            cwd=ROOT,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.proc.poll() is not None or self.status()[0] == 0, 60, what="fedctl up")
        assert self.proc.poll() is None, self.log.read_text()

    def status(self) -> tuple[int, Any]:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedctl",
                "status",
                "--router",
                self.zmq,
                "--json",
                "--timeout",
                "2",
            ],
            env=fed_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        return r.returncode, (json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stderr)

    def health(self) -> dict[str, Any]:
        return call_ok(self.zmq, "federation_health", timeout=5.0)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def luigi_cfg(tmp_path: Path, http: str) -> Path:
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(
        f"[core]\nscheduler_url = http://{http}\nrpc_retry_wait = 1\n"
        "autoload_range = false\n[worker]\nwait_interval = 0.2\n"
    )
    return cfg


def done_per_shard(health: dict[str, Any]) -> dict[str, int]:
    return {s["shard_id"]: s["counts"].get("DONE", 0) for s in health["shards"]}


def shard_pids(config: Path, sid: str) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"shard serve --config {config} --id {sid}"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def test_up_runs_unmodified_luigi_over_http_and_fedctl_run_over_zeromq(tmp_path: Path) -> None:
    up = Up(tmp_path)
    try:
        code, health = up.status()
        assert code == 0 and len(health["shards"]) == 3 and all(s["up"] for s in health["shards"])
        # the unmodified luigi command, pointed at the router's HTTP gateway by luigi.cfg
        env = fed_env(
            LUIGI_CONFIG_PATH=str(luigi_cfg(tmp_path, up.http)), FED_DAILY_ROOT=str(tmp_path / "http")
        )
        luigi_bin = shutil.which("luigi") or str(Path(sys.executable).parent / "luigi")
        r = subprocess.run(
            [
                luigi_bin,
                "--module",
                "examples.daily",
                "RangeBatch",
                "--start",
                "2026-11-20",
                "--days",
                "7",
                "--workers",
                "4",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert "This progress looks :)" in r.stderr + r.stdout
        counts = done_per_shard(up.health())
        assert sum(counts.values()) == 141 and all(n > 0 for n in counts.values()), counts
        assert len(list((tmp_path / "http").rglob("load/*/*.json"))) == 35

        # the same pipeline over ZeroMQ through fedctl run, for the next week (new task ids: re-adding the
        # ids just finished would be ignored for stable_done_cooldown_secs, as luigid does)
        env = fed_env(
            LUIGI_CONFIG_PATH=str(luigi_cfg(tmp_path, up.http)), FED_DAILY_ROOT=str(tmp_path / "zmq")
        )
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedctl",
                "run",
                "--scheduler",
                up.zmq,
                "--module",
                "examples.daily",
                "RangeBatch",
                "--start",
                "2026-11-27",
                "--days",
                "7",
                "--workers",
                "4",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert "This progress looks :)" in r.stderr + r.stdout
        assert len(list((tmp_path / "zmq").rglob("load/*/*.json"))) == 35
        assert sum(done_per_shard(up.health()).values()) == 282

        # a child that dies is reported and restarted
        config = up.data_dir / "federation.toml"
        (pid,) = shard_pids(config, "s1")
        subprocess.run(["kill", "-9", str(pid)], check=True)
        wait_for(
            lambda: shard_pids(config, "s1") not in ([], [pid]) and up.status()[0] == 0,
            60,
            what="s1 restarted",
        )
        assert "shard-s1 exited" in up.log.read_text()
        assert sum(done_per_shard(up.health()).values()) == 282  # its state came back from its store
    finally:
        assert up.stop() == 0
    # Ctrl-C/SIGTERM stops every child
    assert all(not shard_pids(up.data_dir / "federation.toml", s) for s in ("s0", "s1", "s2"))


def test_up_on_postgres_gives_each_shard_its_own_schema(tmp_path: Path, pg_url: str) -> None:
    prefix = f"fedtest_{uuid.uuid4().hex[:8]}_"
    up = Up(tmp_path, "--store", "postgres", "--pg-url", pg_url, "--schema-prefix", prefix)
    try:
        env = fed_env(FED_DAILY_ROOT=str(tmp_path / "data"))
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedctl",
                "run",
                "--scheduler",
                up.zmq,
                "--module",
                "examples.daily",
                "RangeBatch",
                "--start",
                "2026-11-20",
                "--days",
                "7",
                "--workers",
                "4",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        health = up.health()
        counts = done_per_shard(health)
        assert sum(counts.values()) == 141 and all(n > 0 for n in counts.values()), counts
        assert sorted(s["location"] for s in health["shards"]) == [f"schema {prefix}s{i}" for i in range(3)]
        # each schema holds its shard's own tasks (plus mirrors of remote dependencies)
        eng = sa.create_engine(pg_url)
        ids: set[str] = set()
        with eng.connect() as c:
            for i in range(3):
                rows = c.execute(
                    sa.text(f"SELECT task_id FROM \"{prefix}s{i}\".tasks WHERE status = 'DONE'")
                ).all()
                assert len(rows) >= counts[f"s{i}"] > 0
                ids.update(r[0] for r in rows)
        eng.dispose()
        assert len(ids) == 141
    finally:
        up.stop()
        eng = sa.create_engine(pg_url)
        with eng.begin() as c:
            for i in range(3):
                c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{prefix}s{i}" CASCADE'))
        eng.dispose()


def test_restart_backoff_starts_over_after_a_healthy_run(tmp_path: Path) -> None:
    """Crashes in a row back off 0.5 s doubling to 10 s; one after a long healthy run waits 0.5 s again."""
    import io
    import time as _time

    from fedctl.supervisor import HEALTHY_AFTER, Child, Supervisor

    class Dead:
        returncode = 1

        def poll(self) -> int:
            return 1

    child = Child("s0", ["shard", "serve"])
    sup = Supervisor([child], tmp_path / "logs", out=io.StringIO())
    child.proc = Dead()  # type: ignore[assignment]
    delays = []
    for _ in range(7):  # crashes right after each start
        child.started = _time.monotonic()
        child.next_start = 0.0
        sup.check()
        delays.append(round(child.next_start - _time.monotonic(), 1))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    # then it ran healthy for a while before dying: the backoff starts over
    child.started = _time.monotonic() - HEALTHY_AFTER - 1
    child.next_start = 0.0
    sup.check()
    assert round(child.next_start - _time.monotonic(), 1) == 0.5
