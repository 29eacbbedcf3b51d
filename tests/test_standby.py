"""Shard failover with a standby (Postgres): real shard, standby and router processes.

The standby binds nothing until it owns the shard; the router's DEALER is connected to every
endpoint of the shard, so it finds the new owner without a config change.  A killed owner is
replaced within seconds and loses nothing acknowledged; a frozen owner is fenced when it wakes
and never answers from its stale memory.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from federation.config import FederationConfig, RouterConfig, ShardSpec
from federation.errors import FederationError
from federation.transport import ZmqClient
from tests.conftest import free_port
from tests.procs import ROOT, call_ok, fed_env, wait_for


def _task(tid: str, status: str = "PENDING", worker: str = "w1") -> dict[str, Any]:
    return {"task_id": tid, "status": status, "worker": worker, "family": "T", "params": {"n": tid}}


class Failover:
    """One shard with a standby, and a router, each a ``fedctl`` process."""

    def __init__(
        self,
        tmp_path: Path,
        pg_url: str,
        schema: str,
        *,
        session_timeout: float | None = None,
        router_timeout: float = 3.0,
    ):
        self.tmp_path = tmp_path
        self.ep = [f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"]
        spec = ShardSpec("s0", self.ep[0], pg_url, schema, (self.ep[1],), session_timeout)
        self.config = FederationConfig(
            shards=(spec,),
            groups={"default": ("s0",)},
            router=RouterConfig(
                zmq=f"tcp://127.0.0.1:{free_port()}", http=None, timeout=router_timeout, health_timeout=1.0
            ),
        )
        self.path = tmp_path / "federation.toml"
        self.path.write_text(self.config.to_toml())
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pg_url, self.schema = pg_url, schema

    def spawn(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedctl", *argv],
            env=fed_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.procs[name] = proc
        return proc

    def shard(self, name: str, endpoint: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            name, "shard", "serve", "--config", str(self.path), "--id", "s0", "--standby", "--bind", endpoint
        )

    def router(self) -> subprocess.Popen[bytes]:
        proc = self.spawn("router", "router", "serve", "--config", str(self.path))
        wait_for(lambda: call_ok(self.zmq, "federation_health"), 30, what="router")
        return proc

    @property
    def zmq(self) -> str:
        return self.config.router.zmq

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def epoch(self) -> int:
        eng = sa.create_engine(self.pg_url)
        try:
            with eng.connect() as c:
                return int(
                    c.execute(
                        sa.text(f"SELECT value FROM {self.schema}.store_info WHERE key = 'owner_epoch'")
                    ).scalar_one()
                )
        finally:
            eng.dispose()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


@pytest.fixture
def failover(tmp_path: Path, pg_url: str, pg_schema: str) -> Any:
    made: list[Failover] = []

    def make(**kw: Any) -> Failover:
        f = Failover(tmp_path, pg_url, pg_schema, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


class Caller(threading.Thread):
    """A client adding tasks through the router without pause, retrying each call until it is
    acknowledged (as Luigi's client retries): records every acknowledged id and every failure."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.acked: list[str] = []
        self.failures: list[tuple[float, str]] = []
        self.ack_times: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        client = ZmqClient(self.endpoint, timeout=2.0)
        n = 0
        try:
            while not self.halt.is_set():
                tid = f"T_{n}"
                while not self.halt.is_set():
                    try:
                        client.call("add_task", _task(tid))
                    except FederationError as e:
                        self.failures.append((time.monotonic(), f"{e.code}: {e}"))
                        time.sleep(0.05)
                        continue
                    self.acked.append(tid)
                    self.ack_times.append(time.monotonic())
                    break
                n += 1
        finally:
            client.close()

    def longest_gap_after(self, t: float) -> float:
        times = [t] + [x for x in self.ack_times if x >= t]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def _shard_endpoint(zmq: str) -> str | None:
    h = call_ok(zmq, "federation_health", timeout=2.0)
    if not h:
        return None
    s = h["shards"][0]
    return s.get("endpoint") if s.get("up") else None


def test_a_standby_takes_over_a_killed_owner_and_nothing_acknowledged_is_lost(failover: Any) -> None:
    f = failover()
    owner = f.shard("owner", f.ep[0])
    wait_for(lambda: call_ok(f.ep[0], "shard_info"), 30, what="the owner")
    standby = f.shard("standby", f.ep[1])
    wait_for(lambda: "the owner is" in f.log("standby"), 30, what="the standby to wait")
    # a standby binds nothing and answers nothing
    assert call_ok(f.ep[1], "shard_info", timeout=0.5) is None
    epoch0 = f.epoch()
    f.router()
    wait_for(lambda: _shard_endpoint(f.zmq) == f.ep[0], 30, what="the router to reach the owner")

    caller = Caller(f.zmq)
    caller.start()
    wait_for(lambda: len(caller.acked) >= 50, 30, what="acknowledged calls before the kill")
    t_kill = time.monotonic()
    owner.kill()
    owner.wait(10)
    wait_for(lambda: _shard_endpoint(f.zmq) == f.ep[1], 30, what="the router to reach the new owner")
    took_over = time.monotonic() - t_kill
    n_before = len(caller.acked)
    wait_for(lambda: len(caller.acked) >= n_before + 50, 30, what="calls answered by the new owner")
    caller.halt.set()
    caller.join(10)

    assert standby.poll() is None, f.log("standby")
    assert "took the shard over" in f.log("standby")
    assert f.epoch() == epoch0 + 1  # the new owner fenced the old one out
    listed = ZmqClient(f.zmq, timeout=10).call(
        "task_list", {"status": "PENDING", "upstream_status": "", "limit": False}
    )
    missing = set(caller.acked) - set(listed)
    assert not missing, sorted(missing)[:5]
    failed_during = [x for x in caller.failures if x[0] >= t_kill]
    print(
        f"\ntakeover seen by the router {took_over:.2f} s after kill -9; longest wait of the client "
        f"{caller.longest_gap_after(t_kill):.2f} s; {len(failed_during)} failed attempts meanwhile "
        f"({sorted({m.split(':')[0] for _, m in failed_during})}); {len(caller.acked)} acknowledged, all kept"
    )


def test_a_frozen_owner_is_fenced_when_it_wakes_and_never_answers_from_stale_memory(failover: Any) -> None:
    f = failover(session_timeout=1.0)
    owner = f.shard("owner", f.ep[0])
    wait_for(lambda: call_ok(f.ep[0], "shard_info"), 30, what="the owner")
    ZmqClient(f.ep[0], timeout=5).call("add_task", _task("before"))
    standby = f.shard("standby", f.ep[1])
    wait_for(lambda: "the owner is" in f.log("standby"), 30, what="the standby to wait")

    owner.send_signal(signal.SIGSTOP)
    # Postgres ends the frozen owner's session after session_timeout; the standby takes over
    wait_for(lambda: call_ok(f.ep[1], "shard_info"), 30, what="the standby to take over")
    ZmqClient(f.ep[1], timeout=5).call("add_task", _task("after"))

    owner.send_signal(signal.SIGCONT)
    # the old owner must not answer from memory (where "after" does not exist): it is fenced
    stale: list[Any] = []
    deadline = time.monotonic() + 20
    while owner.poll() is None and time.monotonic() < deadline:
        try:
            answer = ZmqClient(f.ep[0], timeout=1.0).call(
                "task_list", {"status": "PENDING", "upstream_status": "", "limit": False}
            )
            stale.append(sorted(answer))
        except FederationError:
            pass
    assert not stale, f"a fenced owner answered from memory: {stale[:2]}"
    assert owner.wait(10) == 3, f.log("owner")  # LOST_OWNERSHIP: its supervisor makes it a standby
    assert "ownership" in f.log("owner")
    assert standby.poll() is None
    tasks = ZmqClient(f.ep[1], timeout=5).call(
        "task_list", {"status": "PENDING", "upstream_status": "", "limit": False}
    )
    assert {"before", "after"} <= set(tasks)


def test_calls_caught_by_a_frozen_owner_fail_when_its_connection_drops_not_at_their_deadline(
    failover: Any,
) -> None:
    # a shard timeout far beyond the client's: only the router noticing the frozen owner's dropped
    # connection (ZeroMQ heartbeat) can answer the call before the client gives up
    f = failover(session_timeout=1.0, router_timeout=120.0)
    owner = f.shard("owner", f.ep[0])
    wait_for(lambda: call_ok(f.ep[0], "shard_info"), 30, what="the owner")
    f.shard("standby", f.ep[1])
    wait_for(lambda: "the owner is" in f.log("standby"), 30, what="the standby to wait")
    f.router()
    wait_for(lambda: _shard_endpoint(f.zmq) == f.ep[0], 30, what="the router to reach the owner")

    owner.send_signal(signal.SIGSTOP)
    client = ZmqClient(f.zmq, timeout=60.0)
    with pytest.raises(FederationError) as e:
        client.call("add_task", _task("caught"))  # reaches the frozen owner: lost with it
    client.close()
    assert e.value.code == "unavailable", e.value  # not "timeout": it did not wait for its deadline
    assert "lost its connection to " + f.ep[0] in f.log("router")
    # and the retry is served by the standby that took over
    wait_for(lambda: _shard_endpoint(f.zmq) == f.ep[1], 30, what="the router to reach the new owner")
    ZmqClient(f.zmq, timeout=10.0).call("add_task", _task("caught"))


def _fedctl(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedctl", *argv],
        env=fed_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_standby_refuses_a_bind_the_router_would_not_know_and_an_sqlite_store(
    tmp_path: Path, pg_url: str
) -> None:
    ep = f"tcp://127.0.0.1:{free_port()}"
    stray = f"tcp://127.0.0.1:{free_port()}"
    pg = FederationConfig(
        shards=(ShardSpec("s0", ep, pg_url, "fed_never_created"),), groups={"default": ("s0",)}
    )
    path = tmp_path / "pg.toml"
    path.write_text(pg.to_toml())
    r = _fedctl("shard", "serve", "--config", str(path), "--id", "s0", "--standby", "--bind", stray)
    assert r.returncode == 2
    assert "not an endpoint of shard s0" in r.stderr and "Traceback" not in r.stderr
    assert call_ok(stray, "shard_info", timeout=0.3) is None

    lite = FederationConfig(
        shards=(ShardSpec("s0", ep, f"sqlite:///{tmp_path / 's0.db'}"),), groups={"default": ("s0",)}
    )
    path2 = tmp_path / "lite.toml"
    path2.write_text(lite.to_toml())
    r = _fedctl("shard", "serve", "--config", str(path2), "--id", "s0", "--standby")
    assert r.returncode == 2 and "needs a Postgres store" in r.stderr
    assert not (tmp_path / "s0.db").exists()  # nothing was created

    r = _fedctl("shard", "serve", "--id", "s0", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--standby")
    assert r.returncode == 2 and "--standby needs --config" in r.stderr


def test_config_standbys_are_checked_and_round_trip(tmp_path: Path) -> None:
    from federation.config import ConfigError

    base = {"router": {"zmq": "tcp://127.0.0.1:5555"}}
    good = {
        **base,
        "shards": [
            {
                "id": "s0",
                "endpoint": "tcp://a:1",
                "store": "postgresql://u@h/db",
                "standbys": ["tcp://b:1"],
                "session_timeout": 3,
            }
        ],
    }
    cfg = FederationConfig.from_mapping(good)
    spec = cfg.shard("s0")
    assert spec.endpoints == ("tcp://a:1", "tcp://b:1") and spec.owner_session_timeout == 3.0
    assert (
        FederationConfig.from_mapping(
            {
                **base,
                "shards": [
                    {
                        "id": "s0",
                        "endpoint": "tcp://a:1",
                        "store": "postgresql://u@h/db",
                        "standbys": ["tcp://b:1"],
                    }
                ],
            }
        )
        .shard("s0")
        .owner_session_timeout
        == 5.0
    )
    import tomllib

    assert FederationConfig.from_mapping(tomllib.loads(cfg.to_toml())).shard("s0") == spec

    bad = {
        **base,
        "shards": [
            {"id": "s0", "endpoint": "tcp://a:1", "store": "sqlite:///x.db", "standbys": ["tcp://b:1"]},
            {
                "id": "s1",
                "endpoint": "tcp://c:1",
                "store": "postgresql://u@h/db",
                "standbys": ["tcp://a:1", "nope"],
            },
            {"id": "s2", "endpoint": "tcp://d:1", "store": "postgresql://u@h/db", "session_timeout": 0},
        ],
    }
    with pytest.raises(ConfigError) as e:
        FederationConfig.from_mapping(bad)
    text = str(e.value)
    assert "s0'.standbys: needs a Postgres store" in text
    assert "tcp://a:1 is used by another shard" in text
    assert "not a ZeroMQ endpoint" in text or "must be a ZeroMQ endpoint" in text
    assert "session_timeout: must be a number of seconds" in text


def test_deploy_renders_standby_units_for_systemd_and_refuses_kubernetes() -> None:
    from fedctl.deploy import RenderOptions, render
    from federation.config import ConfigError

    cfg = FederationConfig.from_mapping(
        {
            "router": {"zmq": "tcp://127.0.0.1:5555"},
            "shards": [
                {
                    "id": "s0",
                    "endpoint": "tcp://a:5601",
                    "store": "postgresql://u@db/f",
                    "standbys": ["tcp://b:5601"],
                },
                {"id": "s1", "endpoint": "tcp://a:5602", "store": "postgresql://u@db/f"},
            ],
        }
    )
    # shards on other hosts without [security]: rendered only when told so (docs/security.md)
    files = render(cfg, RenderOptions(targets=("systemd",), insecure=True))
    owner = files["systemd/default/luigi-federation-shard-s0.service"]
    standby = files["systemd/default/luigi-federation-shard-s0-standby1.service"]
    assert "ExecStart=" in owner and owner.split("ExecStart=")[1].split("\n")[0].endswith(
        "--id s0 --standby --insecure"
    )
    assert "--standby --bind tcp://b:5601" in standby and "Restart=on-failure" in standby
    assert "--standby" not in files["systemd/default/luigi-federation-shard-s1.service"]
    with pytest.raises(ConfigError, match="standbys: rendered for systemd only"):
        render(cfg, RenderOptions(targets=("kubernetes",)))
