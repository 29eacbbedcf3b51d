"""Task history out of the shards' event tables, into Parquet (``fedctl history export``).

Every status change a shard commits is a row of its append-only ``events``
table (task, status, worker, host, time).  :func:`export_history` reads
those rows from any number of shard stores — read-only, next to running
shards, without taking their ownership — joins what the tasks table still
knows (family, namespace) and writes one Parquet file, page by page, so a
long history never has to fit in memory.  The file appears only when it is
complete (written to a temporary name, then renamed).

Columns: ``shard``, ``event_id`` (per shard, in commit order), ``task_id``,
``family``, ``namespace`` (null for a task pruned since), ``status``,
``worker``, ``host``, ``time`` (UTC, microseconds).  :func:`read_history`
gives it back as a pandas DataFrame.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from federation.errors import ConfigError
from shard.store import open_store

SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("event_id", pa.int64()),
        ("task_id", pa.string()),
        ("family", pa.string()),
        ("namespace", pa.string()),
        ("status", pa.string()),
        ("worker", pa.string()),
        ("host", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
    ]
)

PAGE = 50_000


@dataclass(frozen=True)
class StoreRef:
    """Where one shard's store is: what ``open_store`` takes."""

    shard_id: str
    store: str
    schema: str | None = None


@dataclass
class HistoryExport:
    path: Path
    rows: int = 0
    by_shard: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)


def _in_namespaces(ns: str | None, prefixes: Sequence[str]) -> bool:
    if not prefixes:
        return True
    if ns is None:
        return False
    return any(ns == p or ns.startswith(p + ".") for p in prefixes)


def export_history(
    stores: Iterable[StoreRef],
    out: str | os.PathLike[str],
    *,
    since: float | None = None,
    until: float | None = None,
    namespaces: Sequence[str] = (),
    page: int = PAGE,
) -> HistoryExport:
    """Write the history of ``stores`` (events with ``since <= time < until``) to the Parquet file ``out``.

    ``namespaces`` keeps the tasks of those namespaces and the namespaces below them
    (``fin`` keeps ``fin`` and ``fin.ledger``); a pruned task's namespace is unknown, so a filter
    leaves its events out.  Raises ConfigError/StorageError (nothing written) on a bad store.
    """
    if page < 1:
        raise ConfigError("page must be at least 1")
    if since is not None and until is not None and until <= since:
        raise ConfigError(f"--until ({until}) must be after --since ({since})")
    path = Path(out)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    result = HistoryExport(path)
    refs = list(stores)
    writer = pq.ParquetWriter(str(tmp), SCHEMA)
    try:
        for ref in refs:
            with open_store(ref.store, ref.shard_id, schema=ref.schema, readonly=True) as store:
                after = 0
                while True:
                    rows = store.history(after_id=after, since=since, until=until, limit=page)
                    if not rows:
                        break
                    after = rows[-1][0]
                    kept = [r for r in rows if _in_namespaces(r[7], namespaces)]
                    if kept:
                        writer.write_table(_table(ref.shard_id, kept))
                        result.rows += len(kept)
                        result.by_shard[ref.shard_id] += len(kept)
                        result.by_status.update(r[2] for r in kept)
                    if len(rows) < page:
                        break
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return result


def _table(shard_id: str, rows: list[tuple[Any, ...]]) -> pa.Table:
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "shard": pa.array([shard_id] * len(rows), pa.string()),
            "event_id": pa.array(cols[0], pa.int64()),
            "task_id": pa.array(cols[1], pa.string()),
            "family": pa.array(cols[6], pa.string()),
            "namespace": pa.array(cols[7], pa.string()),
            "status": pa.array(cols[2], pa.string()),
            "worker": pa.array(cols[3], pa.string()),
            "host": pa.array(cols[4], pa.string()),
            "time": pa.array([round(ts * 1e6) for ts in cols[5]], pa.timestamp("us", tz="UTC")),
        },
        schema=SCHEMA,
    )


def read_history(path: str | os.PathLike[str]) -> Any:
    """The exported file as a pandas DataFrame."""
    return pq.read_table(str(path)).to_pandas()
