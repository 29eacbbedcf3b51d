"""Router redundancy: two ``fedctl router serve --standby`` processes over real shard processes.

One router leads (holds the leader lock, binds, serves); the other binds nothing until the
leader is gone.  A client calling through the list of both routers keeps going across a
``kill -9`` of the leader: its failed calls are retried on whichever router serves, nothing
acknowledged before is lost, and the new leader rebuilds the relay of cross-shard dependencies
from the shards.
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

from fedctl.routerha import leader_lock_for
from federation.client import FederationScheduler
from federation.config import ConfigError, FederationConfig, RouterConfig, ShardSpec
from federation.errors import FederationError, TransportError
from federation.placement import Placement
from federation.transport import ZmqClient
from router.standby import FileLeaderLock, watchdog_for
from shard.store import PgLeaderLock
from tests.conftest import free_port
from tests.procs import ROOT, call_ok, fed_env, wait_for


def _task(
    tid: str, status: str = "PENDING", worker: str = "w1", deps: list[str] | None = None
) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "task_id": tid,
        "status": status,
        "worker": worker,
        "family": "T",
        "params": {"n": tid},
    }
    if deps is not None:
        kw["deps"] = deps
    return kw


class Fed:
    """N SQLite (or Postgres) shards and two routers in standby mode, each a ``fedctl`` process."""

    def __init__(self, tmp_path: Path, n_shards: int = 3, pg: tuple[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        shards = []
        for i in range(n_shards):
            ep = f"tcp://127.0.0.1:{free_port()}"
            if pg:
                shards.append(ShardSpec(f"s{i}", ep, pg[0], f"{pg[1]}_s{i}"))
            else:
                shards.append(ShardSpec(f"s{i}", ep, f"sqlite:///{tmp_path}/s{i}.db"))
        self.config = FederationConfig(
            shards=tuple(shards),
            groups={"default": tuple(s.id for s in shards)},
            router=RouterConfig(
                zmq=f"tcp://127.0.0.1:{free_port()}", http=None, timeout=3.0, health_timeout=1.0
            ),
        )
        self.path = tmp_path / "federation.toml"
        self.path.write_text(self.config.to_toml())
        self.routers = [f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.placement = Placement.from_config(self.config)

    @property
    def router_list(self) -> str:
        return ",".join(self.routers)

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

    def start_shards(self) -> None:
        for s in self.config.shards:
            self.spawn(s.id, "shard", "serve", "--config", str(self.path), "--id", s.id)
        for s in self.config.shards:
            wait_for(lambda s=s: call_ok(s.endpoint, "shard_info"), 30, what=f"shard {s.id}")

    def router(self, k: int, *extra: str) -> subprocess.Popen[bytes]:
        return self.spawn(
            f"router{k}",
            "router",
            "serve",
            "--config",
            str(self.path),
            "--standby",
            "--zmq",
            self.routers[k],
            *extra,
        )

    def all_up(self, endpoint: str) -> bool:
        h = call_ok(endpoint, "federation_health", timeout=1.0)
        return bool(h) and all(s.get("up") for s in h["shards"])

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

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
def fed(tmp_path: Path) -> Any:
    made: list[Fed] = []

    def make(**kw: Any) -> Fed:
        f = Fed(tmp_path, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


class Caller(threading.Thread):
    """Adds tasks through the router list without pause, retrying each call until acknowledged."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.acked: list[str] = []
        self.failures: list[tuple[float, str]] = []
        self.ack_times: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        client = ZmqClient(self.endpoint, timeout=1.0)
        n = 0
        try:
            while not self.halt.is_set():
                tid = f"C_{n}"
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


def _pair_on_two_shards(placement: Placement) -> tuple[str, str]:
    """A dependent ``A`` and its dependency ``B`` owned by different shards."""
    b = "B_0"
    for i in range(1000):
        a = f"A_{i}"
        if placement.owner(a) != placement.owner(b):
            return a, b
    raise AssertionError("no cross-shard pair")


def test_kill_9_of_the_leader_router_a_standby_takes_over_and_nothing_is_lost(fed: Any) -> None:
    _kill_the_leader(fed(n_shards=3))


@pytest.mark.postgres
def test_kill_9_of_the_leader_router_on_postgres_stores(fed: Any, pg_url: str, pg_schema: str) -> None:
    f = fed(n_shards=3, pg=(pg_url, pg_schema))
    try:
        _kill_the_leader(f)
    finally:
        f.stop()
        _drop(pg_url, f)


def _drop(pg_url: str, f: Fed) -> None:
    eng = sa.create_engine(pg_url)
    with eng.connect() as c:
        for s in f.config.shards:
            c.execute(sa.text(f"DROP SCHEMA IF EXISTS {s.schema} CASCADE"))
        c.commit()
    eng.dispose()


def _kill_the_leader(f: Fed) -> None:
    f.start_shards()
    leader = f.router(0)
    wait_for(lambda: f.all_up(f.routers[0]), 30, what="the first router to lead")
    standby = f.router(1)
    wait_for(lambda: "waiting for the leader lock" in f.log("router1"), 30, what="the standby to wait")
    # a standby binds nothing and answers nothing
    assert call_ok(f.routers[1], "federation_health", timeout=0.5) is None

    client = ZmqClient(f.router_list, timeout=2.0)
    # before: a task DONE (acknowledged), a cross-shard dependency A -> B with B pending
    client.call("add_task", _task("D_done", status="DONE"))
    a, b = _pair_on_two_shards(f.placement)
    client.call("add_task", _task(a, worker="wd", deps=[b]))
    client.call("add_task", _task(b, worker="wd"))

    caller = Caller(f.router_list)
    caller.start()
    wait_for(lambda: len(caller.acked) >= 50, 30, what="acknowledged calls before the kill")
    t_kill = time.monotonic()
    leader.kill()
    leader.wait(10)
    wait_for(lambda: f.all_up(f.routers[1]), 30, what="the standby to lead")
    took_over = time.monotonic() - t_kill
    n_before = len(caller.acked)
    wait_for(lambda: len(caller.acked) >= n_before + 50, 30, what="calls answered by the new leader")
    caller.halt.set()
    caller.join(10)
    gap = caller.longest_gap_after(t_kill)
    print(
        f"\nrouter failover: standby served all shards {took_over:.2f} s after kill -9; longest wait for an "
        f"acknowledgement {gap:.2f} s; {len(caller.failures)} failed attempts retried; "
        f"{len(caller.acked)} acknowledged"
    )
    assert standby.poll() is None, f.log("router1")
    assert "leader after" in f.log("router1")
    assert took_over < 15, took_over

    # nothing lost: every acknowledged add_task is there, the DONE is DONE (read through the list)
    for tid in ["D_done", *caller.acked]:
        got = client.call("task_search", {"task_str": tid})
        statuses = {st for st, tasks in got.items() if tid in tasks}
        assert statuses, f"{tid} lost"
    done = client.call("task_list", {"status": "DONE", "upstream_status": "", "search": "D_done"})
    assert "D_done" in done

    # the new leader rebuilt the relay from the shards: B done through it makes A runnable
    client.call("add_task", _task(b, status="DONE", worker="wd"))

    def a_is_given() -> bool:
        work = client.call("get_work", {"worker": "wd"})
        return work.get("task_id") == a

    wait_for(a_is_given, 20, what=f"{a} to be runnable once {b} (another shard) is DONE")
    client.close()
    # Luigi's worker client takes the same list
    luigi_client = FederationScheduler(f.router_list, retry_attempts=3, retry_wait=0.1)
    luigi_client.add_task(worker="w2", task_id="L_1", status="DONE", family="L", params={"n": "L_1"})
    assert "L_1" in luigi_client.task_list("DONE", "", search="L_1")
    luigi_client.close()


def test_a_client_with_a_router_list_waits_for_a_leader_and_fails_cleanly_without_one(fed: Any) -> None:
    f = fed(n_shards=2)
    client = ZmqClient(f.router_list, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(FederationError) as e:
        client.call("federation_health")
    assert time.monotonic() - t0 < 3
    assert "no router of" in str(e.value)
    client.close()
    with pytest.raises(TransportError, match="not a ZeroMQ endpoint"):
        ZmqClient("tcp://127.0.0.1:1,127.0.0.1:2")


def test_a_second_router_on_the_same_lock_file_waits_even_through_a_symlink(tmp_path: Path) -> None:
    path = tmp_path / "router.leader.lock"
    one = FileLeaderLock(str(path))
    assert one.try_acquire() and one.held()
    (tmp_path / "link").symlink_to(path)
    two = FileLeaderLock(str(tmp_path / "link"))
    assert not two.try_acquire()
    # the lock file deleted: the leader no longer holds it (another router can make a new one)
    path.unlink()
    assert not one.held()
    assert two.try_acquire()
    one.close()
    two.close()


def test_bad_leader_lock_settings_are_refused(tmp_path: Path) -> None:
    cfg = FederationConfig(
        shards=(ShardSpec("s0", "tcp://127.0.0.1:1", f"sqlite:///{tmp_path}/s0.db"),),
        groups={"default": ("s0",)},
    )
    assert isinstance(leader_lock_for(cfg), FileLeaderLock)
    assert leader_lock_for(cfg).path == str(tmp_path.resolve() / "router.leader.lock")  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="postgresql:// URL or a file path"):
        leader_lock_for(cfg, "mysql://x/y")
    with pytest.raises(ConfigError, match="no directory"):
        leader_lock_for(cfg, str(tmp_path / "nope" / "x.lock"))
    with pytest.raises(ConfigError, match="must be > 0"):
        leader_lock_for(cfg, session_timeout=0)


@pytest.mark.postgres
def test_postgres_leader_lock_is_exclusive_and_a_lost_session_loses_it(pg_url: str, pg_schema: str) -> None:
    one = PgLeaderLock(pg_url, f"router:{pg_schema}", session_timeout=5)
    two = PgLeaderLock(pg_url, f"router:{pg_schema}", session_timeout=5)
    try:
        assert one.try_acquire() and one.held()
        assert not two.try_acquire()
        eng = sa.create_engine(pg_url)
        with eng.connect() as c:
            c.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = :k AND objid = hashtext(:key)::oid"
                ),
                {"k": 0x4C464544, "key": f"router:{pg_schema}"},
            )
            c.commit()
        eng.dispose()
        assert wait_for(two.try_acquire, 10, what="the second lock")
        assert not one.held()
    finally:
        one.close()
        two.close()


@pytest.mark.postgres
def test_a_frozen_leader_is_replaced_and_exits_when_woken(fed: Any, pg_url: str, pg_schema: str) -> None:
    f = fed(n_shards=2, pg=(pg_url, pg_schema))
    try:
        f.start_shards()
        leader = f.router(0, "--leader-timeout", "2")
        wait_for(lambda: f.all_up(f.routers[0]), 30, what="the first router to lead")
        f.router(1, "--leader-timeout", "2")
        wait_for(lambda: "waiting for the leader lock" in f.log("router1"), 30, what="the standby to wait")
        client = ZmqClient(f.router_list, timeout=1.0)
        client.call("add_task", _task("F_done", status="DONE"))
        leader.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: f.all_up(f.routers[1]), 30, what="the standby to lead")
        took_over = time.monotonic() - t0
        # a call waiting for the frozen leader (its kernel accepted the connection): once woken, the
        # old leader's lease has run out and it answers nothing before it finds its lock gone
        direct = ZmqClient(f.routers[0], timeout=3.0)
        answered: list[Any] = []
        asker = threading.Thread(
            target=lambda: answered.append(_call_or_none(direct, "federation_health", {}))
        )
        asker.start()
        time.sleep(0.3)
        leader.send_signal(signal.SIGCONT)
        asker.join(10)
        direct.close()
        assert answered == [None], answered
        assert leader.wait(10) == 3, f.log("router0")
        assert "lost the leader lock" in f.log("router0")
        print(f"\nfrozen leader replaced after {took_over:.2f} s (leader timeout 2 s)")
        done = wait_for(
            lambda: _call_or_none(
                client, "task_list", {"status": "DONE", "upstream_status": "", "search": "F_done"}
            ),
            20,
            what="the new leader to answer",
        )
        assert "F_done" in done
        client.close()
    finally:
        f.stop()
        _drop(pg_url, f)


def _call_or_none(client: ZmqClient, method: str, kwargs: dict[str, Any]) -> Any:
    try:
        return client.call(method, kwargs)
    except FederationError:
        return None


class _HungLock:
    """A lock whose check hangs until released (a leader cut off from Postgres)."""

    where = "test"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.answer = True

    def try_acquire(self) -> bool:
        return True

    def held(self) -> bool:
        self.release.wait()
        return self.answer

    def close(self) -> None:
        pass


def test_the_lease_runs_out_while_the_lock_cannot_be_checked_and_a_lost_lock_is_reported() -> None:
    lock = _HungLock()
    lost: list[bool] = []
    dog = watchdog_for(lock, lambda: lost.append(True), session_timeout=0.8)  # interval 0.2, lease 0.4
    dog.start()
    assert dog.valid()
    wait_for(lambda: not dog.valid(), 3, what="the lease to run out")
    lock.release.set()
    wait_for(dog.valid, 3, what="the lease renewed by a check that found the lock held")
    lock.answer = False
    wait_for(lambda: lost == [True], 3, what="the lost lock reported")
    assert not dog.valid() or dog.lost
    dog.stop()


def test_a_router_without_a_valid_lease_answers_nothing(tmp_path: Path) -> None:
    from router.server import Router

    cfg = FederationConfig(
        shards=(ShardSpec("s0", f"tcp://127.0.0.1:{free_port()}", f"sqlite:///{tmp_path}/s0.db"),),
        groups={"default": ("s0",)},
        router=RouterConfig(zmq=f"tcp://127.0.0.1:{free_port()}", http=None, timeout=1.0, health_timeout=0.5),
    )
    router = Router(cfg)
    leading = threading.Event()
    router.lease = leading.is_set
    loop = threading.Thread(target=router.serve_forever, daemon=True)
    loop.start()
    try:
        assert call_ok(router.endpoint, "federation_health", timeout=4.5) is None
        leading.set()
        assert call_ok(router.endpoint, "federation_health", timeout=5.0) is not None
    finally:
        router.stop()
        loop.join(10)
        router.close()


def test_router_serve_refuses_a_leader_lock_without_standby_and_a_bad_lock(tmp_path: Path) -> None:
    cfg = FederationConfig(
        shards=(ShardSpec("s0", f"tcp://127.0.0.1:{free_port()}", f"sqlite:///{tmp_path}/s0.db"),),
        groups={"default": ("s0",)},
        router=RouterConfig(zmq=f"tcp://127.0.0.1:{free_port()}", http=None),
    )
    path = tmp_path / "federation.toml"
    path.write_text(cfg.to_toml())
    base = [sys.executable, "-m", "fedctl", "router", "serve", "--config", str(path)]
    for extra, message in [
        (["--leader-lock", str(tmp_path / "l")], "add --standby"),
        (["--standby", "--leader-lock", "redis://x"], "postgresql:// URL or a file path"),
        (["--standby", "--leader-timeout", "0"], "must be > 0"),
    ]:
        out = subprocess.run(
            [*base, *extra], env=fed_env(), capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert out.returncode != 0 and message in out.stderr, (extra, out.stderr)
        assert call_ok(cfg.router.zmq, "federation_health", timeout=0.2) is None


def test_fedctl_up_with_two_routers_on_the_same_ports_survives_a_killed_leader(tmp_path: Path) -> None:
    import os
    import urllib.parse
    import urllib.request

    zmq, http = f"tcp://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    data = tmp_path / "fed"
    up = subprocess.Popen(
        [sys.executable, "-m", "fedctl", "up", "--shards", "2", "--routers", "2", "--data-dir", str(data)]
        + ["--zmq", zmq, "--http", http],
        env=fed_env(),
        cwd=ROOT,
        stdout=open(tmp_path / "up.log", "ab"),
        stderr=subprocess.STDOUT,
    )
    lock = data / "router.leader.lock"
    try:
        wait_for(lambda: up.poll() is not None or call_ok(zmq, "federation_health"), 60, what="fedctl up")
        assert up.poll() is None, (tmp_path / "up.log").read_text()
        wait_for(lambda: "waiting for the leader lock" in _read(data / "logs" / "router-standby1.log"), 30)
        client = ZmqClient(zmq, timeout=1.0)
        client.call("add_task", _task("U_done", status="DONE"))
        leader = int(lock.read_text().split()[0])
        t0 = time.monotonic()
        os.kill(leader, signal.SIGKILL)
        # the same endpoints, now bound by the standby: ZeroMQ and Luigi's HTTP
        wait_for(lambda: _read(lock).split()[:1] not in ([], [str(leader)]), 30, what="a new leader")
        wait_for(lambda: call_ok(zmq, "federation_health"), 30, what="the new leader on the same port")
        took_over = time.monotonic() - t0
        body = urllib.request.urlopen(
            f"http://{http}/api/task_list?data="
            + urllib.parse.quote('{"status": "DONE", "search": "U_done"}'),
            timeout=10,
        ).read()
        assert b"U_done" in body
        print(f"\nfedctl up --routers 2: the standby serves the same ports {took_over:.2f} s after kill -9")
        # the supervisor restarts the killed leader, which waits as the standby now
        wait_for(lambda: _read(data / "logs" / "router.log").count("waiting for the leader lock") >= 1, 30)
        client.close()
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
