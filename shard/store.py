"""The shard's durable state: SQLAlchemy Core over one SQLite file or one Postgres schema.

``open_store(url, shard_id)`` takes ownership of the shard's storage and
returns a :class:`Store`.  The server calls :meth:`Store.load` once at start,
then :meth:`Store.commit` once per batch of requests (group commit) and only
replies after it returns.  This module is the only place that speaks SQL;
every foreign exception is turned into :class:`~federation.errors.StorageError`
here, with a message naming the shard and the backend.

Layout (the same tables on both backends; see ``docs/store.md``):

- ``tasks``: one row per task; ``data`` is the whole record as msgpack (records
  hold ``inf`` and nested structures, which JSON cannot carry), the other
  columns are copies for queries and exports;
- ``workers``, ``meta``: the same idea for workers and scheduler-wide values;
- ``events``: the append-only status history (exports, throughput);
- ``store_info``: schema version, owning shard id, ownership epoch.

Ownership: one live process per shard.  SQLite holds an ``flock`` on
``<file>.lock``; Postgres holds a session advisory lock on the connection that
also carries every write, so a process that lost its session (killed, frozen
past ``idle_session_timeout``, terminated by an operator) can no longer write
either.  When it reconnects it must win the lock again *and* find the
ownership epoch it wrote at start; otherwise another process owned the shard
in between and this one is fenced out for good.
"""

from __future__ import annotations

import binascii
import errno
import fcntl
import json
import logging
import math
import os
import re
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import msgpack
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema

from federation.config import schema_for_shard
from federation.errors import ConfigError, FederationError, ShardLockedError, StorageError
from shard.changes import Changes, Event, Snapshot

__all__ = [
    "SCHEMA_VERSION",
    "Store",
    "SQLiteStore",
    "PostgresStore",
    "open_store",
    "watch_owner",
    "OwnerWatch",
    "schema_for_shard",
    "metadata",
]

log = logging.getLogger(__name__)

#: bumped whenever the table layout changes; a store written by a newer version is refused
SCHEMA_VERSION = 1

metadata = sa.MetaData()

tasks_table = sa.Table(
    "tasks",
    metadata,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("family", sa.Text, nullable=False),
    sa.Column("namespace", sa.Text, nullable=False),
    # nullable: SQLite stores NaN as NULL; the exact value is in ``data`` anyway
    sa.Column("priority", sa.Float),
    sa.Column("updated", sa.Float),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
workers_table = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", sa.Text, primary_key=True),
    sa.Column("last_active", sa.Float),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
meta_table = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
events_table = sa.Table(
    "events",
    metadata,
    # BIGSERIAL on Postgres; on SQLite it must be exactly INTEGER to alias the rowid
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("worker", sa.Text),
    sa.Column("host", sa.Text),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Index("ix_events_ts", "ts"),
    sa.Index("ix_events_task_id", "task_id"),
)
store_info_table = sa.Table(
    "store_info",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

_SHARD_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SQLITE_SYNC = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
#: first key of the two-int advisory lock: "LFED", so our locks are easy to spot in pg_locks
_LOCK_CLASS = 0x4C464544

T = TypeVar("T")


# -- helpers -------------------------------------------------------------------


def _unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def _describe(e: BaseException) -> str:
    """A short message for a foreign exception: the DBAPI's text, not SQLAlchemy's SQL + parameters dump."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip() or type(e).__name__
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:400] + "..."


def _json_dumps(value: Any) -> str:
    # NaN/inf must never reach Postgres as bare JSON tokens (Postgres rejects them); see _pg_float
    return json.dumps(value, allow_nan=False)


def _pg_float(x: Any) -> float | str | None:
    """A float for a json_to_recordset row: non-finite values travel as the strings float8 accepts."""
    if x is None:
        return None
    f = float(x)
    if math.isfinite(f):
        return f
    if f != f:
        return "NaN"
    return "Infinity" if f > 0 else "-Infinity"


def _b64(blob: bytes) -> str:
    # base64.b64encode(blob) without its Python wrapper (one call per record of every commit)
    return binascii.b2a_base64(blob, newline=False).decode("ascii")


def _identity(x: T) -> T:
    return x


def _safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


# -- the store -----------------------------------------------------------------


class Store(ABC):
    """A shard's durable state.  Obtain one with :func:`open_store`.

    Thread-safe (one internal mutex), though the server uses it from one
    thread.  Every method raises :class:`~federation.errors.StorageError` (or
    its subclass :class:`~federation.errors.ShardLockedError`) and nothing else
    for storage problems.
    """

    backend: str
    location: str

    def __init__(self, shard_id: str, engine: Engine, *, where: str, readonly: bool) -> None:
        self.shard_id = shard_id
        self.readonly = readonly
        self._engine = engine
        self._where = where  # for messages: backend + location (+ server), never a password
        self._mutex = threading.RLock()
        self._conn: Connection | None = None
        self._epoch = 0
        self._closed = False

    # -- public API ----------------------------------------------------------

    def load(self) -> Snapshot:
        """Everything committed, for ``core.restore()``."""

        def run(conn: Connection) -> Snapshot:
            snap = Snapshot()
            snap.tasks = [_unpack(b) for b in conn.execute(sa.select(tasks_table.c.data)).scalars()]
            snap.workers = [_unpack(b) for b in conn.execute(sa.select(workers_table.c.data)).scalars()]
            snap.meta = {
                k: _unpack(b) for k, b in conn.execute(sa.select(meta_table.c.key, meta_table.c.data))
            }
            return snap

        return self._run("load", run)

    def commit(self, changes: Changes) -> None:
        """Write ``changes`` in one transaction; returns only once it is durable.

        A task or worker id listed both as upserted and as deleted is upserted
        (the record wins).  An empty ``Changes`` touches nothing.  On failure
        nothing of ``changes`` is stored (or, if the connection died during the
        commit itself, the outcome is unknown: reload with :meth:`load`).
        """
        if changes.is_empty():
            return
        if self.readonly:
            raise StorageError(f"shard {self.shard_id} ({self._where}): store was opened read-only")
        batch = self._prepare(changes)
        self._run("commit", lambda conn: self._write(conn, batch), write=True)

    def events(self, since: float | None = None, limit: int | None = None) -> list[Event]:
        """History in commit order: events with ``ts >= since`` (all if None), the first ``limit`` of them."""
        ev = events_table
        query = sa.select(ev.c.task_id, ev.c.status, ev.c.worker, ev.c.host, ev.c.ts).order_by(ev.c.id)
        if since is not None:
            query = query.where(ev.c.ts >= float(since))
        if limit is not None:
            query = query.limit(max(0, int(limit)))
        return self._run("events", lambda conn: [Event(*row) for row in conn.execute(query)])

    def task_events(self, task_id: str, limit: int = 500) -> list[Event]:
        """One task's status changes, oldest first: its newest ``limit`` events (the TUI's history tab)."""
        ev = events_table
        newest = (
            sa.select(ev.c.id, ev.c.task_id, ev.c.status, ev.c.worker, ev.c.host, ev.c.ts)
            .where(ev.c.task_id == task_id)
            .order_by(ev.c.id.desc())
            .limit(max(1, int(limit)))
        )
        rows = self._run("task_events", lambda conn: list(conn.execute(newest)))
        return [Event(*row[1:]) for row in reversed(rows)]

    def events_of(self, task_ids: list[str]) -> list[Event]:
        """Every history row of these tasks, in commit order (resharding copies them to the new owner)."""
        ev = events_table
        cols = (ev.c.task_id, ev.c.status, ev.c.worker, ev.c.host, ev.c.ts)

        def run(conn: Connection) -> list[Event]:
            rows: list[Any] = []
            ids = sorted(set(task_ids))
            for i in range(0, len(ids), 500):
                query = sa.select(ev.c.id, *cols).where(ev.c.task_id.in_(ids[i : i + 500]))
                rows.extend(conn.execute(query))
            rows.sort(key=lambda r: r[0])
            return [Event(*row[1:]) for row in rows]

        return self._run("events_of", run)

    def history(
        self,
        *,
        after_id: int = 0,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50_000,
    ) -> list[tuple[int, str, str, str | None, str | None, float, str | None, str | None]]:
        """One page of history with what the tasks table still knows of each task, in commit order.

        Rows ``(event_id, task_id, status, worker, host, ts, family, namespace)`` with
        ``event_id > after_id`` and ``since <= ts < until``; family and namespace are None for a
        task that was pruned since.  Page on with ``after_id`` = the last row's ``event_id``.
        """
        ev, t = events_table, tasks_table
        query = (
            sa.select(
                ev.c.id, ev.c.task_id, ev.c.status, ev.c.worker, ev.c.host, ev.c.ts, t.c.family, t.c.namespace
            )
            .select_from(ev.outerjoin(t, t.c.task_id == ev.c.task_id))
            .where(ev.c.id > int(after_id))
            .order_by(ev.c.id)
            .limit(max(1, int(limit)))
        )
        if since is not None:
            query = query.where(ev.c.ts >= float(since))
        if until is not None:
            query = query.where(ev.c.ts < float(until))
        return self._run("history", lambda conn: [tuple(row) for row in conn.execute(query)])

    def prune_events(self, before: float, limit: int = 20_000) -> int:
        """Delete the oldest history older than ``before`` (epoch seconds), at most ``limit`` events
        (a bounded pause for the shard's loop); returns how many went.

        Only the owner calls this (``prune_history`` on the shard): the events table is append-only
        otherwise, and task state does not depend on it.
        """
        if self.readonly:
            raise StorageError(f"shard {self.shard_id} ({self._where}): store was opened read-only")
        ev = events_table
        oldest = sa.select(ev.c.id).where(ev.c.ts < float(before)).order_by(ev.c.id).limit(max(1, int(limit)))
        stmt = ev.delete().where(ev.c.id.in_(oldest.scalar_subquery()))
        return self._run("prune_events", lambda conn: int(conn.execute(stmt).rowcount), write=True)

    def counts_by_status(self) -> dict[str, int]:
        """Number of stored tasks per status."""
        query = sa.select(tasks_table.c.status, sa.func.count()).group_by(tasks_table.c.status)
        return self._run("counts_by_status", lambda conn: {s: int(n) for s, n in conn.execute(query)})

    def confirm_ownership(self) -> None:  # noqa: B027 - SQLite's flock needs no check
        """Raise ShardLockedError if another process took this shard over; StorageError if that
        cannot be known now.  Cheap when the store was used recently (see the backends)."""

    def close(self) -> None:
        """Release the ownership lock and the connection.  Idempotent."""
        self._stop_background()  # outside the mutex: the heartbeat thread takes it
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._drop_connection()
            self._release_lock()
            self._engine.dispose()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shard={self.shard_id!r} {self._where}>"

    # -- the frame every operation runs in ---------------------------------------

    def _run(self, what: str, fn: Callable[[Connection], T], *, write: bool = False) -> T:
        with self._mutex:
            if self._closed:
                raise StorageError(f"shard {self.shard_id} ({self._where}): {what} on a closed store")
            with self._translate(what):
                conn = self._connection()
                try:
                    result = fn(conn)
                    self._end(conn, write=write)
                    return result
                except BaseException:
                    self._after_error(conn)
                    raise

    @contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        try:
            yield
        except FederationError:
            raise
        except (sa_exc.SQLAlchemyError, OSError) as e:
            raise StorageError(f"shard {self.shard_id} ({self._where}): {what} failed: {_describe(e)}") from e
        except (ValueError, TypeError, msgpack.StackError) as e:
            # mostly stored bytes that do not decode (msgpack's errors are ValueErrors): corruption,
            # or rows written by something else
            raise StorageError(
                f"shard {self.shard_id} ({self._where}): {what} failed: {type(e).__name__}: {e}"
            ) from e

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._drop_connection()
            self._conn = self._reconnect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a dead connection may fail to close; it is gone either way
                log.debug("closing a dead connection failed", exc_info=True)

    def _after_error(self, conn: Connection) -> None:
        if conn.invalidated or conn.closed:
            self._drop_connection()
            return
        try:
            if conn.in_transaction():
                conn.rollback()
        except Exception:
            self._drop_connection()

    # -- shared preparation --------------------------------------------------------

    def _prepare(self, changes: Changes) -> dict[str, list[Any]]:
        """Validate and encode everything before any SQL is sent (a bad record aborts nothing half-done)."""
        blob, num = self._blob_codec, self._float_codec
        pack = msgpack.Packer(use_bin_type=True).pack  # one Packer per batch: cheaper than packb per record
        out: dict[str, list[Any]] = {}
        try:
            task_rows = []
            for task_id, rec in changes.tasks.items():
                family = rec["family"]
                status = rec["status"]
                if not isinstance(task_id, str) or not isinstance(status, str) or not isinstance(family, str):
                    raise TypeError("task_id, status and family must be strings")
                if rec.get("task_id", task_id) != task_id:
                    raise ValueError(f"record filed under {task_id!r} has task_id {rec['task_id']!r}")
                task_rows.append(
                    {
                        "task_id": task_id,
                        "status": status,
                        "family": family,
                        "namespace": family.rpartition(".")[0],
                        "priority": num(rec.get("priority", 0)),
                        "updated": num(rec.get("updated")),
                        "data": blob(pack(rec)),
                    }
                )
            out["tasks"] = task_rows
            out["deleted_tasks"] = sorted(set(changes.deleted_tasks).difference(changes.tasks))
            worker_rows = []
            for worker_id, rec in changes.workers.items():
                if not isinstance(worker_id, str):
                    raise TypeError("worker_id must be a string")
                worker_rows.append(
                    {
                        "worker_id": worker_id,
                        "last_active": num(rec.get("last_active")),
                        "data": blob(pack(rec)),
                    }
                )
            out["workers"] = worker_rows
            out["deleted_workers"] = sorted(set(changes.deleted_workers).difference(changes.workers))
            out["meta"] = [{"key": str(k), "data": blob(pack(v))} for k, v in changes.meta.items()]
            out["events"] = [
                {
                    "task_id": e.task_id,
                    "status": e.status,
                    "worker": e.worker,
                    "host": e.host,
                    "ts": num(e.ts),
                }
                for e in changes.events
            ]
        except KeyError as e:
            raise StorageError(
                f"shard {self.shard_id} ({self._where}): commit refused: a task record lacks {e.args[0]!r}"
            ) from e
        except (TypeError, ValueError, OverflowError) as e:
            raise StorageError(
                f"shard {self.shard_id} ({self._where}): commit refused: bad record: {e}"
            ) from e
        return out

    # -- backend hooks -------------------------------------------------------------

    _blob_codec: Callable[[bytes], Any] = staticmethod(_identity)
    _float_codec: Callable[[Any], Any] = staticmethod(_identity)

    @abstractmethod
    def _reconnect(self) -> Connection:
        """A fresh connection, ownership re-checked (or a fencing error)."""

    @abstractmethod
    def _write(self, conn: Connection, batch: dict[str, list[Any]]) -> None: ...

    @abstractmethod
    def _end(self, conn: Connection, *, write: bool) -> None:
        """Finish an operation: commit a write, end a read's transaction (must be durable on return)."""

    @abstractmethod
    def _release_lock(self) -> None: ...

    def _stop_background(self) -> None:  # noqa: B027 - optional hook, most backends have no threads
        """Stop helper threads (the Postgres heartbeat)."""

    # -- shared initialisation -------------------------------------------------------

    def _init_schema(self, conn: Connection, *, existing_tables: set[str], create: bool) -> None:
        """Create missing tables, check the store belongs to this shard, bump the ownership epoch.

        Runs inside the caller's transaction, after ownership was taken.
        """
        ours = set(metadata.tables)
        if existing_tables and "store_info" not in existing_tables:
            raise StorageError(
                f"shard {self.shard_id} ({self._where}): refusing to use it: it already holds tables "
                f"({', '.join(sorted(existing_tables)[:5])}) but is not a luigi-federation store"
            )
        if not existing_tables and not create:
            raise StorageError(f"shard {self.shard_id} ({self._where}): no store there (opened read-only)")
        if create and not ours <= existing_tables:
            metadata.create_all(conn, checkfirst=True)
        info = dict(conn.execute(sa.select(store_info_table.c.key, store_info_table.c.value)).all())
        owner = info.get("shard_id")
        if owner is not None and owner != self.shard_id:
            raise StorageError(
                f"shard {self.shard_id} ({self._where}): this store belongs to shard {owner!r}, "
                f"not {self.shard_id!r}; give each shard its own file or schema"
            )
        version = int(info.get("schema_version", SCHEMA_VERSION))
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"shard {self.shard_id} ({self._where}): store has schema version {version}, "
                f"this program understands up to {SCHEMA_VERSION}; upgrade luigi-federation"
            )
        self._epoch = int(info.get("owner_epoch", 0))
        if not create:
            return
        self._epoch += 1
        values = {
            "schema_version": str(version),
            "shard_id": self.shard_id,
            "owner_epoch": str(self._epoch),
            "owner": f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
        }
        if "created" not in info:
            values["created"] = str(time.time())
        for key, value in values.items():
            if key in info:
                conn.execute(
                    store_info_table.update().where(store_info_table.c.key == key).values(value=value)
                )
            else:
                conn.execute(store_info_table.insert().values(key=key, value=value))

    def _read_epoch(self, conn: Connection) -> int:
        query = sa.select(store_info_table.c.value).where(store_info_table.c.key == "owner_epoch")
        return int(conn.execute(query).scalar_one_or_none() or 0)


# -- SQLite ------------------------------------------------------------------------


class SQLiteStore(Store):
    """One SQLite file per shard, WAL mode, ownership by ``flock`` on ``<file>.lock``."""

    backend = "sqlite"

    def __init__(
        self, path: str, shard_id: str, *, synchronous: str = "FULL", readonly: bool = False
    ) -> None:
        self.path = path
        self.location = path
        self.synchronous = synchronous
        self._lock_fd: int | None = None
        engine = sa.create_engine(
            URL.create("sqlite+pysqlite", database=path),
            poolclass=NullPool,
            connect_args={"check_same_thread": False},  # our mutex serialises use
        )
        sa_event.listen(engine, "connect", self._on_connect)
        sa_event.listen(engine, "begin", self._on_begin)
        super().__init__(shard_id, engine, where=f"sqlite {path}", readonly=readonly)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        # take transaction control away from pysqlite (it would not BEGIN before SELECTs)
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 10000")
        if self.readonly:
            cur.execute("PRAGMA query_only = ON")
        else:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute(f"PRAGMA synchronous = {self.synchronous}")
        cur.close()

    def _on_begin(self, conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if not self.readonly else "BEGIN")

    def _open(self) -> None:
        with self._translate("open"):
            if self.readonly:
                if not os.path.exists(self.path):
                    raise StorageError(
                        f"shard {self.shard_id} ({self._where}): no such file (opened read-only)"
                    )
            else:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                self._take_lock()
            conn = self._engine.connect()
            self._conn = conn
            existing = set(sa.inspect(conn).get_table_names())
            self._init_schema(conn, existing_tables=existing, create=not self.readonly)
            conn.commit()

    def _take_lock(self) -> None:
        # the real file's lock: a symlink to the database (or a relative path) names the same lock
        lock_path = os.path.realpath(self.path) + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            try:
                holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "holder unknown"
            finally:
                os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ShardLockedError(
                    f"shard {self.shard_id} is already served by another process "
                    f"(sqlite {self.path}: lock {lock_path} held by {holder})"
                ) from e
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock

    def _reconnect(self) -> Connection:
        # the flock, not the connection, is the ownership on SQLite: reconnecting is always safe
        return self._engine.connect()

    def _end(self, conn: Connection, *, write: bool) -> None:
        if conn.in_transaction():
            conn.commit()

    def _write(self, conn: Connection, batch: dict[str, list[Any]]) -> None:
        # Fenced as on Postgres: the flock keeps a second owner out, but not one that came in
        # through a deleted lock file; it bumped owner_epoch, and BEGIN IMMEDIATE holds the write
        # lock, so reading the epoch here decides before anything of this batch is written.
        epoch = self._read_epoch(conn)
        if epoch != self._epoch:
            raise ShardLockedError(
                f"shard {self.shard_id} ({self._where}): ownership lost: another process took the "
                f"store (epoch {self._epoch} -> {epoch}); nothing of this batch was written"
            )
        if batch["deleted_tasks"]:
            stmt = tasks_table.delete().where(tasks_table.c.task_id == sa.bindparam("k"))
            conn.execute(stmt, [{"k": k} for k in batch["deleted_tasks"]])
        if batch["deleted_workers"]:
            stmt = workers_table.delete().where(workers_table.c.worker_id == sa.bindparam("k"))
            conn.execute(stmt, [{"k": k} for k in batch["deleted_workers"]])
        for table, key in ((tasks_table, "tasks"), (workers_table, "workers"), (meta_table, "meta")):
            if batch[key]:
                conn.execute(_sqlite_upsert(table), batch[key])
        if batch["events"]:
            conn.execute(events_table.insert(), batch["events"])


_SQLITE_UPSERTS: dict[str, Any] = {}


def _sqlite_upsert(table: sa.Table) -> Any:
    stmt = _SQLITE_UPSERTS.get(table.name)
    if stmt is None:
        ins = sqlite_dialect.insert(table)
        pk = [c for c in table.primary_key.columns]
        stmt = ins.on_conflict_do_update(
            index_elements=pk, set_={c.name: ins.excluded[c.name] for c in table.columns if not c.primary_key}
        )
        _SQLITE_UPSERTS[table.name] = stmt
    return stmt


# -- Postgres -------------------------------------------------------------------------


class PostgresStore(Store):
    """One Postgres schema per shard; ownership by an advisory lock on the one connection that writes.

    Commits are a single statement (data-modifying CTEs: deletes, upserts
    from ``json_to_recordset``, event inserts) run in autocommit: one round
    trip and one transaction per batch.
    """

    backend = "postgresql"

    def __init__(
        self,
        url: URL,
        shard_id: str,
        *,
        schema: str,
        readonly: bool = False,
        session_timeout: float | None = 30.0,
    ) -> None:
        self.schema = schema
        self.location = f"schema {schema}"
        self.session_timeout = session_timeout
        #: the commit statement of each shape, as SQL text for this schema (``_pg_compiled``)
        self._compiled: dict[tuple[bool, ...], tuple[str, dict[str, Any]]] = {}
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._last_use = time.monotonic()
        self._fenced: str | None = None
        server = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
        connect_args: dict[str, Any] = {}
        defaults = {
            "connect_timeout": 10,
            "application_name": f"fed-shard {shard_id} pid {os.getpid()}@{socket.gethostname()}"[:63],
            # notice a dead server well before the OS default of two hours
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        for key, value in defaults.items():
            if key not in url.query:
                connect_args[key] = value
        engine = sa.create_engine(
            url,
            poolclass=NullPool,  # the owner connection must never go back to a pool with the lock on it
            connect_args=connect_args,
            json_serializer=_json_dumps,
        ).execution_options(schema_translate_map={None: schema})
        super().__init__(shard_id, engine, where=f"postgresql schema {schema} on {server}", readonly=readonly)
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        if session_timeout and not readonly:
            self._hb_thread = threading.Thread(
                target=self._heartbeat, name=f"store-heartbeat-{shard_id}", daemon=True
            )
            self._hb_thread.start()

    _blob_codec = staticmethod(_b64)
    _float_codec = staticmethod(_pg_float)

    # -- ownership -------------------------------------------------------------------

    def _new_owner_connection(self) -> Connection:
        """Connect, set the session timeouts and take the advisory lock (or raise ShardLockedError)."""
        conn = self._engine.connect()
        try:
            if not self.readonly:
                # commit() promises durability: never inherit a server-wide synchronous_commit=off
                conn.exec_driver_sql("SET synchronous_commit = on")
                conn.commit()
            if self.session_timeout and not self.readonly:
                ms = int(self.session_timeout * 1000)
                # a frozen owner (SIGSTOP, hung host) loses its session, hence the lock, after this
                if conn.dialect.server_version_info and conn.dialect.server_version_info >= (14,):
                    conn.exec_driver_sql(f"SET idle_session_timeout = {ms}")
                conn.exec_driver_sql(f"SET idle_in_transaction_session_timeout = {ms}")
                conn.commit()
            if not self.readonly:
                got = conn.execute(
                    sa.select(sa.func.pg_try_advisory_lock(_LOCK_CLASS, sa.func.hashtext(self.schema)))
                ).scalar_one()
                conn.commit()
                if not got:
                    raise ShardLockedError(
                        f"shard {self.shard_id} is already served by another process "
                        f"({self._where}: advisory lock held by {self._lock_holder(conn)})"
                    )
        except BaseException:
            conn.close()
            raise
        return conn

    def _lock_holder(self, conn: Connection) -> str:
        try:
            row = _lock_holder_row(conn, self.schema)
            conn.rollback()
        except sa_exc.SQLAlchemyError:
            return "another session"
        if row is None:
            return "another session (it may just have let go: retry)"
        return _describe_holder(row)

    def _open(self) -> None:
        with self._translate("open"):
            conn = self._new_owner_connection()
            self._conn = conn
            existing = set(sa.inspect(conn).get_table_names(schema=self.schema))
            if not self.readonly:
                conn.execute(CreateSchema(self.schema, if_not_exists=True))
            self._init_schema(conn, existing_tables=existing, create=not self.readonly)
            conn.commit()
            # from here on every statement is its own transaction: a commit is one round trip
            conn.execution_options(isolation_level="AUTOCOMMIT")

    def _reconnect(self) -> Connection:
        if self._fenced:
            raise ShardLockedError(self._fenced)
        conn = self._new_owner_connection()
        try:
            if not self.readonly:
                epoch = self._read_epoch(conn)
                conn.commit()
                if epoch != self._epoch:
                    self._fenced = (
                        f"shard {self.shard_id} ({self._where}): ownership lost: another process owned it "
                        f"while this one was disconnected (epoch {self._epoch} -> {epoch}); restart this shard"
                    )
                    raise ShardLockedError(self._fenced)
            conn.execution_options(isolation_level="AUTOCOMMIT")
        except BaseException:
            conn.close()
            raise
        log.warning("shard %s: reconnected to %s and still owns it", self.shard_id, self._where)
        return conn

    def _release_lock(self) -> None:
        # the lock lives on the owner connection, which _drop_connection has closed
        pass

    def _stop_background(self) -> None:
        self._hb_stop.set()
        thread = self._hb_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _heartbeat(self) -> None:
        """Keep an idle owner session alive inside ``idle_session_timeout``."""
        assert self.session_timeout
        interval = self.session_timeout / 3
        while not self._hb_stop.wait(interval / 2):
            with self._mutex:
                conn = self._conn
                if (
                    self._hb_stop.is_set()
                    or self._closed
                    or conn is None
                    or time.monotonic() - self._last_use < interval
                ):
                    continue
                try:
                    conn.exec_driver_sql("SELECT 1")
                    self._last_use = time.monotonic()
                except Exception as e:
                    # the next operation reconnects and re-checks ownership
                    log.warning(
                        "shard %s: store session lost (%s): %s", self.shard_id, self._where, _describe(e)
                    )
                    self._drop_connection()

    def confirm_ownership(self) -> None:
        """Before a shard answers from memory alone: if the owner session has been silent for
        half the session timeout (a process frozen past it, e.g. by SIGSTOP, has lost its
        session and perhaps its shard), one round trip on it proves it still holds the lock;
        a lost session is reconnected, which re-checks the lock and the epoch (fencing)."""
        if self.readonly or self._closed:
            return
        max_age = (self.session_timeout or DEFAULT_CONFIRM_AGE) / 2
        if time.monotonic() - self._last_use < max_age:
            return

        def ping(conn: Connection) -> None:
            conn.exec_driver_sql("SELECT 1")

        try:
            self._run("confirm ownership", ping)
        except ShardLockedError:
            raise
        except StorageError:
            # the session is gone (terminated, server restarted): reconnecting decides
            self._run("confirm ownership", ping)

    # -- reads and writes -------------------------------------------------------------

    def _end(self, conn: Connection, *, write: bool) -> None:
        # autocommit: each statement was committed (and flushed to the WAL) as it ran; this only
        # closes SQLAlchemy's bookkeeping transaction (psycopg2 sends nothing in autocommit)
        conn.commit()
        self._last_use = time.monotonic()

    def _write(self, conn: Connection, batch: dict[str, list[Any]]) -> None:
        # the statement compiled once per shape and sent as SQL text: SQLAlchemy's per-execution
        # work for a compiled statement (cache key, bind processors) was about a fifth of a commit's
        # CPU in the shard; the errors and the connection's invalidation are SQLAlchemy's as before
        shape = tuple([bool(batch[k]) for k in _PG_PARTS])
        compiled = self._compiled.get(shape)
        if compiled is None:
            compiled = self._compiled[shape] = _pg_compiled(shape, conn.dialect, self.schema)
        sql, params = compiled[0], dict(compiled[1])
        for part, on in zip(_PG_PARTS, shape, strict=True):
            if on:
                rows = batch[part]
                params[part] = rows if part in _PG_ARRAYS else _json_dumps(rows)
        conn.exec_driver_sql(sql, params)


#: without a session timeout, how old (s, x2) the owner session's last use may be before a shard
#: answering from memory confirms it still owns the shard
DEFAULT_CONFIRM_AGE = 30.0

_HOLDER_QUERY = sa.text(
    "SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid::bigint = :k1 AND l.objid::bigint = (hashtext(:schema)::bigint & 4294967295)"
)


def _lock_holder_row(conn: Connection, schema: str) -> Any:
    return conn.execute(_HOLDER_QUERY, {"k1": _LOCK_CLASS, "schema": schema}).first()


def _describe_holder(row: Any) -> str:
    pid, app, addr, since = row
    return f"backend pid {pid}, application {app!r}, client {addr or 'local socket'}, since {since:%Y-%m-%d %H:%M:%S}"


class OwnerWatch:
    """Who holds a Postgres shard's ownership lock, seen without taking it (a standby's view).

    One connection of its own, no lock, no writes: polling it never gets in the owner's way
    (trying the lock would, if the owner were reconnecting at that moment).
    """

    def __init__(self, url: URL, shard_id: str, schema: str) -> None:
        self.shard_id, self.schema = shard_id, schema
        self._where = (
            f"postgresql schema {schema} on {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
        )
        self._engine = sa.create_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "connect_timeout": 5,
                "application_name": f"fed-standby {shard_id} pid {os.getpid()}"[:63],
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
            },
        ).execution_options(isolation_level="AUTOCOMMIT")
        self._conn: Connection | None = None

    def holder(self) -> str | None:
        """The holder of the shard's lock (pid, application, client), or None when it is free.

        Raises StorageError when the server cannot be asked (the next call reconnects)."""
        try:
            if self._conn is None or self._conn.closed or self._conn.invalidated:
                self._drop()
                self._conn = self._engine.connect()
            row = _lock_holder_row(self._conn, self.schema)
            self._conn.commit()
        except sa_exc.SQLAlchemyError as e:
            self._drop()
            raise StorageError(
                f"shard {self.shard_id} ({self._where}): cannot see the owner: {_describe(e)}"
            ) from e
        return None if row is None else _describe_holder(row)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing a dead connection failed", exc_info=True)

    def close(self) -> None:
        self._drop()
        self._engine.dispose()


def watch_owner(url: str, shard_id: str, *, schema: str | None = None) -> OwnerWatch:
    """An :class:`OwnerWatch` on the shard's store; ConfigError unless it is a Postgres URL."""
    try:
        parsed = sa.engine.make_url(url.strip()) if isinstance(url, str) and "://" in url else None
    except (sa_exc.ArgumentError, ValueError) as e:
        raise ConfigError(f"shard {shard_id}: cannot parse store URL: {e}") from e
    if parsed is None or parsed.drivername not in ("postgresql", "postgres", "postgresql+psycopg2"):
        raise ConfigError(
            f"shard {shard_id}: a standby needs a Postgres store (it waits on the shard's lock in "
            "Postgres); an SQLite shard is restarted in place"
        )
    return OwnerWatch(parsed.set(drivername="postgresql+psycopg2"), shard_id, _pg_schema(shard_id, schema))


_PG_PARTS = ("deleted_tasks", "deleted_workers", "tasks", "workers", "meta", "events")
#: the parts bound as text arrays (the others travel as one JSON text each: ``_pg_rows``)
_PG_ARRAYS = frozenset({"deleted_tasks", "deleted_workers"})
_PG_STATEMENTS: dict[tuple[bool, ...], Any] = {}


def _pg_rows(param: str, columns: list[tuple[str, Any]]) -> Any:
    """``json_to_recordset(:param) AS r(col type, ...)``: a whole batch in one bind parameter."""
    # json, not jsonb: the text is parsed once, straight into rows (measured ~10 % faster)
    fn = sa.func.json_to_recordset(sa.bindparam(param, type_=pg.JSON))
    return fn.table_valued(*(sa.column(name, type_) for name, type_ in columns)).render_derived(
        name=f"r_{param}", with_types=True
    )


def _pg_upsert(table: sa.Table, param: str) -> Any:
    columns = [(c.name, sa.Text if isinstance(c.type, sa.LargeBinary) else c.type) for c in table.columns]
    rows = _pg_rows(param, columns)
    select = sa.select(
        *(
            # bytea travels as base64 text inside the JSON
            sa.func.decode(rows.c[name], "base64")
            if isinstance(table.c[name].type, sa.LargeBinary)
            else rows.c[name]
            for name, _ in columns
        )
    )
    ins = pg.insert(table).from_select([name for name, _ in columns], select)
    pk = list(table.primary_key.columns)
    return ins.on_conflict_do_update(
        index_elements=pk, set_={c.name: ins.excluded[c.name] for c in table.columns if not c.primary_key}
    )


def _pg_commit_statement(shape: tuple[bool, ...]) -> Any:
    """One statement for a whole commit: every non-empty part as a data-modifying CTE (cached per shape)."""
    stmt = _PG_STATEMENTS.get(shape)
    if stmt is not None:
        return stmt
    ctes = []
    on = dict(zip(_PG_PARTS, shape, strict=True))
    for part, table, key in (
        ("deleted_tasks", tasks_table, "task_id"),
        ("deleted_workers", workers_table, "worker_id"),
    ):
        if on[part]:
            ids = sa.bindparam(part, type_=pg.ARRAY(sa.Text))
            ctes.append(table.delete().where(table.c[key] == sa.any_(ids)).cte(f"c_{part}"))
    for part, table in (("tasks", tasks_table), ("workers", workers_table), ("meta", meta_table)):
        if on[part]:
            ctes.append(_pg_upsert(table, part).cte(f"c_{part}"))
    if on["events"]:
        cols = [(c.name, c.type) for c in events_table.columns if c.name != "id"]
        rows = _pg_rows("events", cols)
        ins = sa.insert(events_table).from_select(
            [n for n, _ in cols], sa.select(*(rows.c[n] for n, _ in cols))
        )
        ctes.append(ins.cte("c_events"))
    # the deletes never touch a key that is upserted (Store._prepare removes those), which
    # matters because all CTEs of one statement see the same snapshot
    stmt = sa.select(sa.literal(1)).add_cte(*ctes)
    _PG_STATEMENTS[shape] = stmt
    return stmt


def _pg_compiled(shape: tuple[bool, ...], dialect: Any, schema: str) -> tuple[str, dict[str, Any]]:
    """``_pg_commit_statement(shape)`` as the DBAPI's SQL text for ``schema``, and the values of its
    fixed parameters (``decode(..., 'base64')``'s format, the final ``SELECT 1``)."""
    compiled = _pg_commit_statement(shape).compile(
        dialect=dialect, schema_translate_map={None: schema}, render_schema_translate=True
    )
    fixed = {k: v for k, v in compiled.params.items() if k not in _PG_PARTS}
    return str(compiled), fixed


# -- opening -------------------------------------------------------------------------


def open_store(
    url: str,
    shard_id: str,
    *,
    schema: str | None = None,
    readonly: bool = False,
    session_timeout: float | None = 30.0,
) -> Store:
    """Open (creating if needed) the store of ``shard_id`` and take ownership of it.

    ``url`` is ``sqlite:///path/to/file.db`` (or a plain path ending in .db,
    .sqlite or .sqlite3; ``?synchronous=normal`` trades the last commits
    before a power loss for speed), or ``postgresql://...`` /
    ``postgresql+psycopg2://...`` (one schema per shard: ``schema`` or
    :func:`schema_for_shard`, created if missing).

    ``readonly=True`` opens an existing store without taking ownership (for
    exports next to a running shard); ``commit`` then raises.
    ``session_timeout`` (Postgres): seconds after which the server ends a
    frozen owner's session and so frees the shard; a heartbeat keeps a live,
    idle owner inside it.  None disables both.

    Raises ConfigError for a bad URL, shard id or schema name;
    ShardLockedError if another process serves the shard; StorageError for
    anything the database says.
    """
    if not isinstance(shard_id, str) or not _SHARD_ID_RE.match(shard_id):
        raise ConfigError(
            f"bad shard id {shard_id!r}: use 1-128 letters, digits, '_', '-' or '.', not starting with '-' or '.'"
        )
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            f"shard {shard_id}: empty store URL (use sqlite:///path/file.db or postgresql://...)"
        )
    url = url.strip()
    if "://" not in url:
        if url.lower().endswith(_SQLITE_SUFFIXES):
            return SQLiteStore(os.path.abspath(os.path.expanduser(url)), shard_id, readonly=readonly)
        raise ConfigError(
            f"shard {shard_id}: store URL {url!r} is neither a URL nor a path ending in "
            f"{', '.join(_SQLITE_SUFFIXES)} (use sqlite:///path/file.db or postgresql://user@host/db)"
        )
    try:
        parsed = sa.engine.make_url(url)
    except (sa_exc.ArgumentError, ValueError) as e:
        raise ConfigError(f"shard {shard_id}: cannot parse store URL: {e}") from e
    name = parsed.drivername
    if name in ("sqlite", "sqlite+pysqlite"):
        return _open_sqlite(parsed, shard_id, readonly=readonly)
    if name in ("postgresql", "postgres", "postgresql+psycopg2"):
        return _open_postgres(
            parsed, shard_id, schema=schema, readonly=readonly, session_timeout=session_timeout
        )
    raise ConfigError(
        f"shard {shard_id}: unsupported store URL scheme {name!r} in {_safe_url(parsed)!r} "
        "(use sqlite:///path/file.db or postgresql[+psycopg2]://user@host/db)"
    )


def _open_sqlite(url: URL, shard_id: str, *, readonly: bool) -> SQLiteStore:
    path = url.database or ""
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ConfigError(
            f"shard {shard_id}: store URL {_safe_url(url)!r} names no file; an in-memory SQLite store "
            "would lose everything on exit (use sqlite:///path/file.db)"
        )
    query = dict(url.query)
    sync = str(query.pop("synchronous", "full")).lower()
    if sync not in _SQLITE_SYNC:
        raise ConfigError(f"shard {shard_id}: store URL: synchronous={sync!r} (use full, normal or extra)")
    if query:
        raise ConfigError(
            f"shard {shard_id}: store URL: unknown option(s) {', '.join(sorted(query))} for sqlite"
        )
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        raise ConfigError(
            f"shard {shard_id}: store path {path} is a directory; name a file, e.g. {path}/{shard_id}.db"
        )
    return SQLiteStore(path, shard_id, synchronous=_SQLITE_SYNC[sync], readonly=readonly)


def _pg_schema(shard_id: str, schema: str | None) -> str:
    if schema is None:
        schema = schema_for_shard(shard_id)
        if not _SCHEMA_RE.match(schema):
            raise ConfigError(
                f"shard {shard_id}: default schema name {schema!r} is longer than Postgres allows (63); "
                "give the shard a schema explicitly"
            )
    elif not isinstance(schema, str) or not _SCHEMA_RE.match(schema) or schema.startswith("pg_"):
        raise ConfigError(
            f"shard {shard_id}: bad schema name {schema!r}: use 1-63 lowercase letters, digits and '_', "
            "not starting with a digit or 'pg_'"
        )
    return schema


def _open_postgres(
    url: URL, shard_id: str, *, schema: str | None, readonly: bool, session_timeout: float | None
) -> PostgresStore:
    if url.drivername != "postgresql+psycopg2":
        url = url.set(drivername="postgresql+psycopg2")
    schema = _pg_schema(shard_id, schema)
    if session_timeout is not None and session_timeout <= 0:
        raise ConfigError(
            f"shard {shard_id}: session_timeout must be positive (or None), not {session_timeout!r}"
        )
    return PostgresStore(url, shard_id, schema=schema, readonly=readonly, session_timeout=session_timeout)


# -- the routers' leader lock (fedctl router serve --standby, router/standby.py) -----------------
_log_router = logging.getLogger("router.standby")


class PgLeaderLock:
    """The routers' leader lock: a session advisory lock ``(LFED, hashtext(key))`` in Postgres, on a
    connection of its own whose ``idle_session_timeout`` is ``session_timeout`` (a frozen leader's
    session, hence its lock, ends after it; :meth:`held` pings it to keep a live leader's)."""

    def __init__(self, url: str, key: str, *, session_timeout: float = 5.0) -> None:
        parsed = sa.engine.make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg2")
        if parsed.drivername != "postgresql+psycopg2":
            raise ConfigError(f"the router leader lock needs a postgresql:// URL, not {parsed.drivername}")
        self.key = key
        self.session_timeout = session_timeout
        self.where = f"Postgres {parsed.host or 'localhost'}/{parsed.database} advisory lock {key!r}"
        self._engine = sa.create_engine(
            parsed,
            poolclass=sa.pool.NullPool,
            connect_args={
                "connect_timeout": 5,
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
            },
        )
        self._conn: Connection | None = None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return True
        try:
            conn = self._engine.connect()
        except sa_exc.SQLAlchemyError as e:
            _log_router.warning("router leader lock: cannot reach %s: %s", self.where, _short(e))
            return False
        try:
            ms = int(self.session_timeout * 1000)
            if conn.dialect.server_version_info and conn.dialect.server_version_info >= (14,):
                conn.exec_driver_sql(f"SET idle_session_timeout = {ms}")  # a frozen leader's lock goes
            conn.exec_driver_sql(f"SET idle_in_transaction_session_timeout = {ms}")
            conn.commit()
            got = conn.execute(
                sa.select(sa.func.pg_try_advisory_lock(_LOCK_CLASS, sa.func.hashtext(self.key)))
            ).scalar_one()
            conn.commit()
        except sa_exc.SQLAlchemyError as e:
            conn.close()
            _log_router.warning("router leader lock: %s", _short(e))
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def held(self) -> bool:
        """A ping on the lock's session: it fails once Postgres ended the session (frozen too long,
        database restarted), and then the lock may be another router's."""
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.exec_driver_sql("SELECT 1")
            conn.commit()
            return True
        except sa_exc.SQLAlchemyError:
            self.close()
            return False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sa_exc.SQLAlchemyError:
                pass
            self._conn = None
        self._engine.dispose()


def _short(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
