"""shard.store against both real backends: SQLite files and a live Postgres (one schema per test)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from federation.errors import ConfigError, ShardLockedError, StorageError
from shard.changes import Changes, Event
from shard.store import Store, events_table, open_store, schema_for_shard, tasks_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Backend:
    name: str
    url: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def open(self, shard_id: str = "s0", **extra: Any) -> Store:
        return open_store(self.url, shard_id, **{**self.kwargs, **extra})

    def engine(self) -> sa.Engine:
        """A plain engine on the same tables, for looking behind the store's back."""
        if self.name == "sqlite":
            return sa.create_engine(self.url)
        return sa.create_engine(self.url).execution_options(
            schema_translate_map={None: self.kwargs["schema"]}
        )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path}/data/s0.db")
    return Backend(
        "postgresql", request.getfixturevalue("pg_url"), {"schema": request.getfixturevalue("pg_schema")}
    )


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    s = backend.open()
    yield s
    s.close()


def task(task_id: str, status: str = "PENDING", family: str = "ns.Fam", **extra: Any) -> dict[str, Any]:
    return {"task_id": task_id, "status": status, "family": family, "priority": 0, "updated": 1.0, **extra}


def batch_changes(i: int, size: int = 5) -> Changes:
    """Batch ``i`` of a stream: ``size`` tasks and as many events, all tagged with ``i``."""
    ch = Changes()
    for k in range(size):
        tid = f"B{i}_{k}"
        ch.tasks[tid] = task(tid, batch=i)
        ch.events.append(Event(tid, "PENDING", "w", "h", float(i)))
    return ch


# -- round trips -----------------------------------------------------------------------


def test_round_trip_of_awkward_records(backend: Backend, store: Store) -> None:
    nested = {"params": {"date": "2024-01-01", "list": [1, [2, [3, {"deep": None}]]]}, "flag": True}
    records = {
        "Fam(x=1)": task("Fam(x=1)", family="Fam", priority=float("inf"), **nested),
        "ünï/ℂødé 🚀": task("ünï/ℂødé 🚀", status="DONE", family="a.b.Ünï", updated=float("-inf")),
        "big": task("big", priority=-(2**63), retry=float("nan"), blob=b"\x00\xffbytes", empty={}),
    }
    store.commit(
        Changes(
            tasks=records,
            workers={
                "w-1": {"worker_id": "w-1", "last_active": float("inf"), "info": {"host": "h", "pid": 3}}
            },
            meta={"resources": {"cpu": 4}, "paused": False, "batchers": [["Fam", {"x": "csv"}]]},
        )
    )
    store.close()

    again = backend.open()  # a fresh process-level view: everything came from the database
    try:
        snap = again.load()
    finally:
        again.close()
    loaded = {t["task_id"]: t for t in snap.tasks}
    assert loaded.keys() == records.keys()
    assert loaded["Fam(x=1)"] == records["Fam(x=1)"]
    assert loaded["Fam(x=1)"]["priority"] == float("inf")
    assert loaded["ünï/ℂødé 🚀"] == records["ünï/ℂødé 🚀"]
    big = loaded["big"]
    assert math.isnan(big.pop("retry"))
    assert big == {k: v for k, v in records["big"].items() if k != "retry"}
    assert snap.workers == [
        {"worker_id": "w-1", "last_active": float("inf"), "info": {"host": "h", "pid": 3}}
    ]
    assert snap.meta == {"resources": {"cpu": 4}, "paused": False, "batchers": [["Fam", {"x": "csv"}]]}


def test_query_columns_copy_the_record(backend: Backend, store: Store) -> None:
    store.commit(
        Changes(
            tasks={
                "a": task("a", "RUNNING", "etl.daily.Load", priority=7, updated=5.5),
                "b": task("b", "DONE", "Plain", priority=float("inf")),
            }
        )
    )
    eng = backend.engine()
    with eng.connect() as c:
        t = tasks_table.c
        rows = {
            r.task_id: r
            for r in c.execute(sa.select(t.task_id, t.status, t.family, t.namespace, t.priority, t.updated))
        }
    eng.dispose()
    assert (
        rows["a"].status,
        rows["a"].family,
        rows["a"].namespace,
        rows["a"].priority,
        rows["a"].updated,
    ) == ("RUNNING", "etl.daily.Load", "etl.daily", 7.0, 5.5)
    assert (rows["b"].namespace, rows["b"].priority) == ("", float("inf"))
    assert store.counts_by_status() == {"RUNNING": 1, "DONE": 1}


def test_upsert_overwrites_whole_record(store: Store) -> None:
    store.commit(
        Changes(
            tasks={"t": task("t", "PENDING", extra_key=1)},
            workers={"w": {"worker_id": "w", "last_active": 1.0}},
        )
    )
    store.commit(
        Changes(
            tasks={"t": task("t", "DONE")},
            workers={"w": {"worker_id": "w", "last_active": 2.0}},
            meta={"k": 1},
        )
    )
    store.commit(Changes(meta={"k": [2]}))
    snap = store.load()
    assert snap.tasks == [task("t", "DONE")]  # extra_key gone: the record is replaced, not merged
    assert snap.workers == [{"worker_id": "w", "last_active": 2.0}]
    assert snap.meta == {"k": [2]}
    assert store.counts_by_status() == {"DONE": 1}


def test_deletes(store: Store) -> None:
    store.commit(
        Changes(
            tasks={f"t{i}": task(f"t{i}") for i in range(5)},
            workers={w: {"worker_id": w, "last_active": 0.0} for w in ("w1", "w2")},
        )
    )
    store.commit(Changes(deleted_tasks={"t1", "t3", "never-existed"}, deleted_workers={"w1"}))
    snap = store.load()
    assert sorted(t["task_id"] for t in snap.tasks) == ["t0", "t2", "t4"]
    assert [w["worker_id"] for w in snap.workers] == ["w2"]
    # listed as both upserted and deleted: the record wins
    store.commit(Changes(tasks={"t0": task("t0", "DONE")}, deleted_tasks={"t0", "t2"}))
    assert sorted((t["task_id"], t["status"]) for t in store.load().tasks) == [
        ("t0", "DONE"),
        ("t4", "PENDING"),
    ]


def test_events_appended_and_read_back_in_order(store: Store) -> None:
    # commit order, not timestamp order, is the history's order
    store.commit(
        Changes(events=[Event("a", "PENDING", None, None, 10.0), Event("b", "RUNNING", "w1", "h1", 5.0)])
    )
    store.commit(Changes(events=[Event("a", "DONE", "w1", "h1", 20.0)], tasks={"a": task("a", "DONE")}))
    store.commit(Changes(events=[Event("ü", "FAILED", "w2", None, 30.0)]))
    assert store.events() == [
        Event("a", "PENDING", None, None, 10.0),
        Event("b", "RUNNING", "w1", "h1", 5.0),
        Event("a", "DONE", "w1", "h1", 20.0),
        Event("ü", "FAILED", "w2", None, 30.0),
    ]
    assert [e.status for e in store.events(since=10.0)] == ["PENDING", "DONE", "FAILED"]
    assert [e.status for e in store.events(since=10.0, limit=2)] == ["PENDING", "DONE"]
    assert store.events(limit=0) == []
    assert store.events(since=31.0) == []


def test_large_batch(store: Store) -> None:
    ch = Changes(
        tasks={
            f"T{i:05d}": task(f"T{i:05d}", "PENDING" if i % 3 else "DONE", deps=[f"D{i}"] * 3)
            for i in range(5000)
        },
        events=[Event(f"T{i:05d}", "PENDING", "w", "h", float(i)) for i in range(5000)],
    )
    store.commit(ch)
    snap = store.load()
    assert {t["task_id"]: t for t in snap.tasks} == ch.tasks
    assert store.counts_by_status() == {"DONE": 1667, "PENDING": 3333}
    assert len(store.events()) == 5000
    store.commit(Changes(deleted_tasks={f"T{i:05d}" for i in range(0, 5000, 2)}))
    assert len(store.load().tasks) == 2500


def test_empty_commit_is_a_no_op(backend: Backend, store: Store) -> None:
    store.commit(Changes(tasks={"t": task("t")}, events=[Event("t", "PENDING", None, None, 1.0)]))
    statements: list[str] = []
    sa.event.listen(store._engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    store.commit(Changes())
    assert statements == []
    assert store.load().tasks == [task("t")]
    assert len(store.events()) == 1
    ro = backend.open(readonly=True)
    try:
        ro.commit(Changes())  # no write happens, so even a read-only store accepts it
    finally:
        ro.close()


# -- refusals and errors ---------------------------------------------------------------------


def test_bad_record_is_refused_and_nothing_of_the_batch_is_stored(store: Store) -> None:
    bad = Changes(
        tasks={"ok": task("ok"), "bad": {"task_id": "bad", "family": "F"}},
        events=[Event("ok", "PENDING", None, None, 1.0)],
    )
    with pytest.raises(StorageError, match=r"shard s0 .*lacks 'status'"):
        store.commit(bad)
    with pytest.raises(StorageError, match="bad record"):
        store.commit(Changes(tasks={"s": task("s", when={1, 2})}))  # a set is not msgpack-able
    with pytest.raises(StorageError, match="filed under 'x' has task_id 'y'"):
        store.commit(Changes(tasks={"x": task("y")}))
    assert store.load().tasks == [] and store.events() == []
    store.commit(Changes(tasks={"ok": task("ok")}))  # the store is still usable
    assert store.load().tasks == [task("ok")]


@pytest.mark.postgres
def test_database_error_rolls_back_the_whole_commit(pg_url: str, pg_schema: str) -> None:
    s = open_store(pg_url, "s0", schema=pg_schema)
    try:
        # Postgres text cannot hold NUL: the event fails after the task upsert was planned
        with pytest.raises(StorageError, match=r"shard s0 \(postgresql schema .*\): commit failed"):
            s.commit(
                Changes(tasks={"ok": task("ok")}, events=[Event("bad\x00id", "PENDING", None, None, 1.0)])
            )
        assert s.load().tasks == [] and s.events() == []
        s.commit(Changes(tasks={"ok": task("ok")}))
        assert s.load().tasks == [task("ok")]
    finally:
        s.close()


def test_undecodable_stored_data_is_a_storage_error(backend: Backend, store: Store) -> None:
    store.commit(Changes(tasks={"t": task("t")}))
    eng = backend.engine()
    with eng.begin() as c:
        c.execute(tasks_table.update().values(data=b"\xc1\xc1 not msgpack"))
    eng.dispose()
    with pytest.raises(StorageError, match=r"shard s0 .*load failed"):
        store.load()


def test_second_open_in_process_is_refused(backend: Backend, store: Store) -> None:
    with pytest.raises(ShardLockedError, match=r"^shard s0 is already served by another process \(.*pid"):
        backend.open()
    store.commit(Changes(tasks={"t": task("t")}))  # the owner is unaffected
    store.close()
    again = backend.open()  # and after close the shard is free
    assert again.load().tasks == [task("t")]
    again.close()


def test_closed_store_refuses_work(store: Store) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed store"):
        store.load()


def test_a_store_of_one_shard_cannot_be_opened_as_another(backend: Backend, store: Store) -> None:
    store.commit(Changes(tasks={"t": task("t")}))
    store.close()
    with pytest.raises(StorageError, match=r"belongs to shard 's0', not 's1'"):
        backend.open("s1")
    s = backend.open("s0")
    assert s.load().tasks == [task("t")]
    s.close()


def test_read_only_open_next_to_the_owner(backend: Backend, store: Store) -> None:
    store.commit(Changes(tasks={"t": task("t")}, events=[Event("t", "PENDING", None, None, 1.0)]))
    ro = backend.open(readonly=True)
    try:
        assert ro.load().tasks == [task("t")]
        assert ro.events() == [Event("t", "PENDING", None, None, 1.0)]
        with pytest.raises(StorageError, match="read-only"):
            ro.commit(Changes(tasks={"u": task("u")}))
        with pytest.raises(StorageError, match="belongs to shard 's0'"):
            backend.open("s9", readonly=True)
    finally:
        ro.close()


def test_read_only_open_of_a_missing_store(tmp_path: Any) -> None:
    with pytest.raises(StorageError, match="no such file"):
        open_store(f"sqlite:///{tmp_path}/nothing.db", "s0", readonly=True)
    assert not os.path.exists(tmp_path / "nothing.db")


@pytest.mark.parametrize(
    ("url", "shard_id", "kwargs", "match"),
    [
        ("mysql://u@h/db", "s0", {}, "unsupported store URL scheme 'mysql'"),
        ("", "s0", {}, "empty store URL"),
        ("/tmp/some/file.txt", "s0", {}, "neither a URL nor a path"),
        ("sqlite://", "s0", {}, "in-memory"),
        ("sqlite:///:memory:", "s0", {}, "in-memory"),
        ("sqlite:///x.db?synchronous=sometimes", "s0", {}, "synchronous"),
        ("sqlite:///x.db?timeout=3", "s0", {}, "unknown option"),
        ("postgresql://u@h/db", "s0", {"schema": "Bad-Name"}, "bad schema name"),
        ("postgresql://u@h/db", "s0", {"schema": "pg_mine"}, "bad schema name"),
        ("postgresql://u@h/db", "s" * 70, {}, "longer than Postgres allows"),
        ("sqlite:///x.db", "", {}, "bad shard id"),
        ("sqlite:///x.db", "has space", {}, "bad shard id"),
        ("sqlite:///x.db", "../up", {}, "bad shard id"),
        ("sqlite:///x.db", None, {}, "bad shard id"),
        ("postgresql://u@h/db", "s0", {"session_timeout": 0}, "session_timeout"),
    ],
)
def test_bad_configuration_is_a_config_error(
    url: str, shard_id: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(url, shard_id, **kwargs)


def test_sqlite_directory_is_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        open_store(f"sqlite:///{tmp_path}", "s0")


def test_plain_sqlite_path_and_parent_directory_creation(tmp_path: Any) -> None:
    path = tmp_path / "a" / "b" / "shard.sqlite"
    s = open_store(str(path), "s-1")
    try:
        assert (s.backend, s.location) == ("sqlite", str(path))
        assert path.exists() and (tmp_path / "a" / "b" / "shard.sqlite.lock").exists()
    finally:
        s.close()


def test_foreign_sqlite_files_are_refused(tmp_path: Any) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StorageError, match=r"shard s0 \(sqlite .*junk.db\): open failed"):
        open_store(str(junk), "s0")
    other = tmp_path / "other.db"
    eng = sa.create_engine(f"sqlite:///{other}")
    with eng.begin() as c:
        c.exec_driver_sql("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    eng.dispose()
    with pytest.raises(StorageError, match="not a luigi-federation store"):
        open_store(str(other), "s0")


@pytest.mark.postgres
def test_unreachable_postgres_is_a_storage_error(pg_url: str) -> None:
    with pytest.raises(
        StorageError, match=r"^shard s0 \(postgresql schema fed_s0 on 127.0.0.1:1/db\): open failed"
    ) as info:
        open_store("postgresql://u:secret@127.0.0.1:1/db", "s0")
    assert "secret" not in str(info.value)
    missing_db = sa.engine.make_url(pg_url).set(database=f"nodb_{uuid.uuid4().hex[:8]}")
    with pytest.raises(StorageError, match="does not exist"):
        open_store(missing_db.render_as_string(hide_password=False), "s0")


@pytest.mark.postgres
def test_default_schema_name_and_foreign_schema_refused(pg_url: str, pg_schema: str) -> None:
    assert schema_for_shard("Fin-0.EU") == "fed_fin_0_eu"
    eng = sa.create_engine(pg_url)
    with eng.begin() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{pg_schema}"')
        c.exec_driver_sql(f'CREATE TABLE "{pg_schema}".invoices (id int)')
    eng.dispose()
    with pytest.raises(StorageError, match="not a luigi-federation store"):
        open_store(pg_url, "s0", schema=pg_schema)


@pytest.mark.postgres
def test_two_shards_in_two_schemas_do_not_see_each_other(pg_url: str, pg_schema: str) -> None:
    other = f"{pg_schema}_b"
    a = open_store(pg_url, "a", schema=pg_schema)
    b = open_store(pg_url, "b", schema=other)
    try:
        a.commit(
            Changes(
                tasks={"same": task("same", "DONE"), "only-a": task("only-a")},
                events=[Event("same", "DONE", None, None, 1.0)],
                meta={"m": "a"},
            )
        )
        b.commit(Changes(tasks={"same": task("same", "FAILED")}, meta={"m": "b"}))
        b.commit(Changes(deleted_tasks={"only-a"}))
        assert sorted((t["task_id"], t["status"]) for t in a.load().tasks) == [
            ("only-a", "PENDING"),
            ("same", "DONE"),
        ]
        assert [(t["task_id"], t["status"]) for t in b.load().tasks] == [("same", "FAILED")]
        assert (a.load().meta, b.load().meta) == ({"m": "a"}, {"m": "b"})
        assert (len(a.events()), len(b.events())) == (1, 0)
        assert (a.location, b.location) == (f"schema {pg_schema}", f"schema {other}")
    finally:
        a.close()
        b.close()
        eng = sa.create_engine(pg_url)
        with eng.begin() as c:
            c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')
        eng.dispose()


# -- other processes ----------------------------------------------------------------------

CHILD = r"""
import json, sys
from federation.errors import FederationError
from shard.changes import Changes, Event
from shard.store import open_store
from tests.test_store import batch_changes

args = json.loads(sys.argv[1])
try:
    store = open_store(args["url"], args["shard"], **args["kwargs"])
except FederationError as e:
    print("ERR", type(e).__name__, e, flush=True)
    sys.exit(3)
print("READY", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    try:
        if cmd == "commit":
            store.commit(batch_changes(int(arg)))
            print("OK", arg, flush=True)
        elif cmd == "stream":  # commit batch after batch, acknowledging each, until killed
            i = 0
            while True:
                store.commit(batch_changes(i))
                print("ACK", i, flush=True)
                i += 1
    except FederationError as e:
        print("ERR", type(e).__name__, e, flush=True)
"""


def spawn(backend: Backend, shard_id: str = "s0", **kwargs: Any) -> subprocess.Popen[str]:
    args = {"url": backend.url, "shard": shard_id, "kwargs": {**backend.kwargs, **kwargs}}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the test timeout bounds a hung child
    if not line:
        raise AssertionError(f"child exited: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")
    return line.strip()


def send(proc: subprocess.Popen[str], cmd: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(cmd + "\n")
    proc.stdin.flush()


def open_eventually(opener: Callable[[], Store], deadline_s: float = 30.0) -> Store:
    """Open once the shard's previous owner is gone (its lock may take a moment to go)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return opener()
        except ShardLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def test_second_open_from_another_process_is_refused(backend: Backend, store: Store) -> None:
    child = spawn(backend)
    try:
        out = read_line(child)
        assert out.startswith("ERR ShardLockedError shard s0 is already served by another process (")
        assert f"pid {os.getpid()}" in out  # it names the holder
        assert child.wait(timeout=30) == 3
    finally:
        kill(child)


def test_after_sigkill_of_the_owner_the_store_holds_exactly_what_was_acknowledged(backend: Backend) -> None:
    child = spawn(backend)
    try:
        assert read_line(child) == "READY"
        with pytest.raises(ShardLockedError):
            backend.open()
        send(child, "stream")
        acked = -1
        while acked < 30:
            kind, n = read_line(child).split()
            assert kind == "ACK", n
            acked = int(n)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert child.stdout is not None
        acked = max(
            [acked]
            + [int(line.split()[1]) for line in child.stdout.read().split("\n") if line.startswith("ACK")]
        )
    finally:
        kill(child)
    s = open_eventually(backend.open)
    try:
        snap = s.load()
        batches: dict[int, int] = {}
        for t in snap.tasks:
            batches[t["batch"]] = batches.get(t["batch"], 0) + 1
        last = max(batches)
        # every acknowledged batch is there; at most the one in flight beyond it; none half-written
        assert sorted(batches) == list(range(last + 1))
        assert acked <= last <= acked + 1
        assert set(batches.values()) == {5}
        assert len(s.events()) == 5 * (last + 1)
        s.commit(batch_changes(last + 1))  # and the new owner writes normally
    finally:
        s.close()


# -- Postgres session loss, fencing, heartbeat ------------------------------------------


def backend_pid(pg_url: str, schema: str) -> int | None:
    eng = sa.create_engine(pg_url)
    with eng.connect() as c:
        pid = c.execute(
            sa.text(
                "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
                "AND l.objid::bigint = (hashtext(:s)::bigint & 4294967295)"
            ),
            {"s": schema},
        ).scalar()
    eng.dispose()
    return pid


@pytest.mark.postgres
def test_lost_session_reconnects_when_nobody_else_took_over(pg_url: str, pg_schema: str) -> None:
    s = open_store(pg_url, "s0", schema=pg_schema)
    try:
        s.commit(Changes(tasks={"a": task("a")}))
        old = backend_pid(pg_url, pg_schema)
        assert old is not None
        eng = sa.create_engine(pg_url)
        with eng.connect() as c:
            c.execute(sa.select(sa.func.pg_terminate_backend(old)))
        eng.dispose()
        deadline = time.monotonic() + 30
        while backend_pid(pg_url, pg_schema) == old:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # the first use finds the session dead (nothing written); the next reconnects, wins the
        # lock again and finds its own epoch, so it carries on
        with pytest.raises(StorageError) as info:
            s.commit(Changes(tasks={"b": task("b")}))
        assert not isinstance(info.value, ShardLockedError)
        s.commit(Changes(tasks={"b": task("b")}))
        assert sorted(t["task_id"] for t in s.load().tasks) == ["a", "b"]
        new = backend_pid(pg_url, pg_schema)
        assert new is not None and new != old
    finally:
        s.close()
    assert backend_pid(pg_url, pg_schema) is None  # close released the lock


@pytest.mark.postgres
def test_frozen_owner_loses_the_shard_and_is_fenced_when_it_wakes(pg_url: str, pg_schema: str) -> None:
    backend = Backend("postgresql", pg_url, {"schema": pg_schema})
    child = spawn(backend, session_timeout=1.0)
    try:
        assert read_line(child) == "READY"
        send(child, "commit 0")
        assert read_line(child) == "OK 0"
        child.send_signal(signal.SIGSTOP)  # a hung host: TCP stays up, no heartbeat
        # the server ends the frozen session after idle_session_timeout; the shard is then free
        new_owner = open_eventually(lambda: backend.open(session_timeout=1.0))
        try:
            new_owner.commit(batch_changes(1))
            child.send_signal(signal.SIGCONT)
            send(child, "commit 2")
            out = read_line(child)
            if out.startswith("ERR StorageError"):  # it first noticed its session was gone
                send(child, "commit 2")
                out = read_line(child)
            assert out.startswith("ERR ShardLockedError shard s0 is already served by another process")
        finally:
            new_owner.close()
        # even with the lock free again, the woken process must not write: another owner was there
        send(child, "commit 3")
        out = read_line(child)
        assert out.startswith("ERR ShardLockedError") and "ownership lost" in out, out
        s = backend.open()
        try:
            assert sorted({t["batch"] for t in s.load().tasks}) == [0, 1]
        finally:
            s.close()
    finally:
        kill(child)


@pytest.mark.postgres
def test_heartbeat_keeps_an_idle_owner_session(pg_url: str, pg_schema: str) -> None:
    s = open_store(pg_url, "s0", schema=pg_schema, session_timeout=1.0)
    try:
        pid = backend_pid(pg_url, pg_schema)
        start = time.time()
        eng = sa.create_engine(pg_url)
        # wait (bounded) until the session has outlived its idle timeout several times over
        query = sa.text("SELECT backend_start, state_change FROM pg_stat_activity WHERE pid = :p")
        deadline = time.monotonic() + 30
        while True:
            with eng.connect() as c:
                row = c.execute(query, {"p": pid}).first()
            assert row is not None, "the idle owner session was ended"
            if row.state_change.timestamp() > start + 2.5:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        eng.dispose()
        s.commit(Changes(tasks={"t": task("t")}))
        assert backend_pid(pg_url, pg_schema) == pid  # same session throughout, no reconnect
    finally:
        s.close()


def test_sqlite_events_table_uses_rowid_order(tmp_path: Any) -> None:
    # ids are the rowid alias: strictly increasing in commit order, even across reopen
    url = f"sqlite:///{tmp_path}/e.db"
    for i in range(3):
        s = open_store(url, "s0")
        s.commit(Changes(events=[Event(f"t{i}", "PENDING", None, None, 100.0 - i)]))
        s.close()
    eng = sa.create_engine(url)
    with eng.connect() as c:
        ids = [r.id for r in c.execute(sa.select(events_table.c.id).order_by(events_table.c.ts.desc()))]
    eng.dispose()
    assert ids == sorted(ids)
