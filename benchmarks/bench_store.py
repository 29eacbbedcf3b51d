"""Benchmark of ``shard.store``: commit throughput per batch size, and load() time.

Not a test.  Each configuration commits batches of N Luigi-shaped task
records (about 600 bytes of msgpack each, half of them updates of earlier
rows) plus one event per task and one worker upsert per batch, for a fixed
time, and reports commits/s, task rows/s and commit latency percentiles.

    python -m benchmarks.bench_store                         # sqlite (full, normal) + postgres
    python -m benchmarks.bench_store --backends postgresql --batches 1 100 1000 5000 --seconds 5
    python -m benchmarks.bench_store --load-tasks 100000     # also time load() of 100k tasks

The Postgres run uses a throwaway schema in ``--pg-url`` and drops it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from shard.changes import Changes, Event
from shard.store import Store, open_store

DEFAULT_PG_URL = os.environ.get("FED_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def task_record(i: int, status: str, now: float) -> dict[str, Any]:
    """A record shaped like what the scheduler core keeps for one Luigi task."""
    tid = f"Transform_2024_{i % 12 + 1:02d}_{i % 28 + 1:02d}_topic{i % 7}_{i:010x}"
    return {
        "task_id": tid,
        "status": status,
        "family": "etl.daily.Transform",
        "module": "examples.daily",
        "params": {
            "date": f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
            "topic": f"topic{i % 7}",
            "region": "eu",
            "v": "2",
        },
        "param_visibilities": {"date": 0, "topic": 0, "region": 0, "v": 0},
        "deps": [
            f"Extract_2024_{i % 12 + 1:02d}_{i % 28 + 1:02d}_topic{i % 7}_{(i * 7 + k) & 0xFFFFFFFFFF:010x}"
            for k in range(3)
        ],
        "priority": 0,
        "updated": now,
        "time": now,
        "retry": None,
        "remove": None,
        "worker_running": None,
        "time_running": None,
        "stakeholders": ["worker-1", "worker-2"],
        "workers": ["worker-1"],
        "resources": {"db": 1},
        "failures": [],
        "disable_hard_timeout": float("inf"),
        "tracking_url": None,
        "status_message": None,
        "progress_percentage": None,
        "runnable": True,
        "batchable": False,
    }


def make_changes(batch_no: int, size: int, seen: int) -> Changes:
    """Batch ``batch_no``: half updates of already stored tasks (if any), half new tasks."""
    now = time.time()
    ch = Changes()
    start = batch_no * size
    for k in range(size):
        i = start + k
        if k % 2 and seen:
            i = (i * 2654435761) % seen  # an update of an earlier row
        rec = task_record(i, "RUNNING" if k % 3 else "PENDING", now)
        ch.tasks[rec["task_id"]] = rec
        ch.events.append(Event(rec["task_id"], rec["status"], "worker-1", "host-a", now))
    ch.workers["worker-1"] = {
        "worker_id": "worker-1",
        "last_active": now,
        "info": {"host": "host-a", "pid": 1},
    }
    return ch


def bench_commits(store: Store, size: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    rows = 0
    batch_no = 0
    stored = 0
    cpu0 = time.process_time()
    t_end = time.perf_counter() + seconds
    wall0 = time.perf_counter()
    while time.perf_counter() < t_end or batch_no < 3:
        ch = make_changes(batch_no, size, stored)
        t0 = time.perf_counter()
        store.commit(ch)
        latencies.append(time.perf_counter() - t0)
        rows += len(ch.tasks)
        stored = max(stored, (batch_no + 1) * size)
        batch_no += 1
    wall = time.perf_counter() - wall0
    total = sum(latencies)
    latencies.sort()
    return {
        "commits_s": len(latencies) / total,
        "rows_s": rows / total,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu_us_row": (time.process_time() - cpu0)
        / rows
        * 1e6,  # this process only (includes record building)
        "commits": float(len(latencies)),
        "wall": wall,
    }


def bench_load(store: Store, n: int) -> tuple[float, int]:
    chunk = 5000
    for b in range(0, n, chunk):
        ch = Changes(
            tasks={
                r["task_id"]: r for r in (task_record(i, "DONE", 1.0) for i in range(b, min(n, b + chunk)))
            }
        )
        store.commit(ch)
    t0 = time.perf_counter()
    snap = store.load()
    return time.perf_counter() - t0, len(snap.tasks)


@contextmanager
def opened(kind: str, pg_url: str, workdir: str) -> Iterator[Store]:
    shard = f"bench-{uuid.uuid4().hex[:8]}"
    if kind.startswith("sqlite"):
        sync = kind.partition(":")[2] or "full"
        store = open_store(f"sqlite:///{workdir}/{shard}.db?synchronous={sync}", shard)
        try:
            yield store
        finally:
            store.close()
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    store = open_store(pg_url, shard, schema=schema)
    try:
        yield store
    finally:
        store.close()
        eng = sa.create_engine(pg_url)
        with eng.begin() as c:
            c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        eng.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["sqlite:full", "sqlite:normal", "postgresql"],
        help="sqlite:full, sqlite:normal, postgresql",
    )
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 100, 1000])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per configuration")
    ap.add_argument("--pg-url", default=DEFAULT_PG_URL)
    ap.add_argument("--dir", default=None, help="directory for the SQLite files (default: a temporary one)")
    ap.add_argument("--load-tasks", type=int, default=0, help="also time load() of this many tasks")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.dir) as workdir:
        print(
            f"{'backend':<15}{'batch':>7}{'commits/s':>11}{'rows/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/row':>12}"
        )
        for kind in args.backends:
            for size in args.batches:
                with opened(kind, args.pg_url, workdir) as store:
                    r = bench_commits(store, size, args.seconds)
                print(
                    f"{kind:<15}{size:>7}{r['commits_s']:>11,.0f}{r['rows_s']:>10,.0f}"
                    f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['cpu_us_row']:>12.1f}",
                    flush=True,
                )
        if args.load_tasks:
            for kind in args.backends:
                with opened(kind, args.pg_url, workdir) as store:
                    seconds, n = bench_load(store, args.load_tasks)
                print(
                    f"load() {kind}: {n:,} tasks in {seconds:.2f} s ({n / seconds:,.0f} tasks/s)", flush=True
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
