"""End to end: real `fedctl shard serve` processes, real Luigi workers running examples/daily.py."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from federation.errors import FederationError
from federation.transport import ZmqClient
from tests.procs import ROOT, ShardProcess, call_ok, fed_env, wait_for

pytestmark = pytest.mark.e2e

LUIGI_CFG = """
[core]
rpc-connect-timeout = 3
rpc-retry-attempts = 40
rpc-retry-wait = 1
[worker]
wait_interval = 0.2
"""


def run_fedctl(endpoint: str, tmp_path: Path, *task_args: str) -> subprocess.Popen[bytes]:
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(LUIGI_CFG)
    env = fed_env(FED_DAILY_ROOT=str(tmp_path / "data"), LUIGI_CONFIG_PATH=str(cfg))
    log = open(tmp_path / "run.log", "ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedctl",
            "run",
            "--scheduler",
            endpoint,
            "--module",
            "examples.daily",
            *task_args,
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def done_ids(endpoint: str) -> set[str]:
    tasks = call_ok(endpoint, "task_list", timeout=2.0, status="DONE")
    return set(tasks or ())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_daily_batch_runs_to_completion(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        shard = ShardProcess("s0", f"sqlite:///{tmp_path}/s0.db", log_path=tmp_path / "shard.log")
    else:
        shard = ShardProcess(
            "s0",
            request.getfixturevalue("pg_url"),
            schema=request.getfixturevalue("pg_schema"),
            log_path=tmp_path / "shard.log",
        )
    shard.start()
    try:
        run = run_fedctl(shard.endpoint, tmp_path, "DailyBatch", "--date", "2026-11-20", "--workers", "4")
        assert run.wait(180) == 0, (tmp_path / "run.log").read_text()[-3000:]
        tasks = call_ok(shard.endpoint, "task_list", timeout=5.0)
        assert tasks and all(t["status"] == "DONE" for t in tasks.values()), tasks
        families = {t["name"] for t in tasks.values()}
        assert {"daily.Extract", "daily.Transform", "daily.Load", "DailyBatch"} <= families
        markers = list((tmp_path / "data").rglob("load/*/2026-11-20.json"))
        assert len(markers) == 5
    finally:
        shard.stop()


def test_kill9_mid_run_loses_no_acknowledged_transition(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/s0.db"
    shard = ShardProcess("s0", db, log_path=tmp_path / "shard.log").start()
    try:
        run = run_fedctl(
            shard.endpoint, tmp_path, "RangeBatch", "--start", "2026-11-01", "--days", "3", "--workers", "2"
        )
        # Wait until part of the run is acknowledged, then take the last view the shard acknowledged.
        wait_for(lambda: len(done_ids(shard.endpoint)) >= 8, 120, what="some tasks DONE")
        acked_done = done_ids(shard.endpoint)
        shard.kill9()
        assert run.poll() is None, "the run should be waiting for the shard, not finished"
        shard.start()
        after_restart = done_ids(shard.endpoint)
        assert acked_done <= after_restart, f"lost on kill -9: {sorted(acked_done - after_restart)}"
        assert run.wait(240) == 0, (tmp_path / "run.log").read_text()[-3000:]
        tasks = call_ok(shard.endpoint, "task_list", timeout=5.0)
        assert tasks and all(t["status"] == "DONE" for t in tasks.values())
        assert len(list((tmp_path / "data").rglob("load/*/*.json"))) == 15
    finally:
        shard.stop()


def test_every_acknowledged_add_task_survives_kill9(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/s0.db"
    shard = ShardProcess("s0", db, log_path=tmp_path / "shard.log").start()
    acked: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        client = ZmqClient(shard.endpoint, timeout=1.0)
        i = 0
        while not stop.is_set():
            task_id = f"T_{i}"
            try:
                client.call("add_task", {"task_id": task_id, "worker": "w1", "family": "T"})
            except FederationError:
                continue  # not acknowledged: the shard is down; try the same id again
            acked.append(task_id)
            i += 1
        client.close()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        wait_for(lambda: len(acked) >= 300, 60, what="300 acknowledged add_task")
        shard.kill9()
        n_before_kill = len(acked)
        shard.start()
        wait_for(lambda: len(acked) >= n_before_kill + 50, 60, what="writes after the restart")
        stop.set()
        t.join(10)
        tasks = call_ok(shard.endpoint, "task_list", timeout=5.0)
        assert tasks is not None
        missing = [tid for tid in acked if tid not in tasks]
        assert not missing, f"{len(missing)} acknowledged tasks lost, e.g. {missing[:5]}"
    finally:
        stop.set()
        shard.stop()
