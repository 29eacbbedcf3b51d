"""End-to-end throughput of one shard over ZeroMQ: add -> get_work -> done, N concurrent workers.

Starts ``fedctl shard serve`` on the chosen store (a fresh Postgres schema, dropped afterwards,
or a fresh SQLite file), then runs W worker processes. Each registers its own T tasks (a chain
of dependencies every ``chain`` tasks, so the dependency path is exercised), then loops
``get_work`` -> ``add_task(DONE)`` until the shard has nothing left for it, pinging like Luigi's
keep-alive thread. Prints registration rate, completion rate and get_work latency percentiles.

    python -m loadtest.bench_shard_e2e --store postgres --workers 8 --tasks-per-worker 500
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from federation.errors import FederationError
from federation.transport import ZmqClient

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_main(endpoint: str, wid: int, n_tasks: int, chain: int, out: mp.Queue) -> None:
    client = ZmqClient(endpoint, timeout=30)
    worker = f"bench-worker-{wid}"
    ids = [f"bench.T_{wid}_{i}_{uuid.uuid4().hex[:10]}" for i in range(n_tasks)]
    t0 = time.perf_counter()
    for i, tid in enumerate(ids):
        deps = [ids[i - 1]] if chain and i % chain else []
        client.call(
            "add_task",
            {
                "task_id": tid,
                "worker": worker,
                "family": "bench.T",
                "deps": deps,
                "params": {"i": str(i)},
                "priority": 0,
            },
        )
    client.call("add_worker", {"worker": worker, "info": [["workers", 1], ["host", "bench"]]})
    t_reg = time.perf_counter() - t0
    lat: list[float] = []
    done = 0
    last_ping = time.monotonic()
    t1 = time.perf_counter()
    while True:
        s = time.perf_counter()
        reply = client.call("get_work", {"worker": worker, "host": "bench", "current_tasks": []})
        lat.append(time.perf_counter() - s)
        tid = reply.get("task_id")
        if tid is None:
            if reply.get("n_pending_tasks", 0) == 0:
                break
            time.sleep(0.01)
            continue
        client.call("add_task", {"task_id": tid, "worker": worker, "status": "DONE", "runnable": None})
        done += 1
        if time.monotonic() - last_ping > 1.0:
            client.call("ping", {"worker": worker})
            last_ping = time.monotonic()
    t_run = time.perf_counter() - t1
    client.close()
    out.put({"wid": wid, "registered": n_tasks, "t_reg": t_reg, "done": done, "t_run": t_run, "lat": lat})


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    ap.add_argument(
        "--pg-url",
        default=os.environ.get("FED_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"),
    )
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--tasks-per-worker", type=int, default=500)
    ap.add_argument(
        "--chain",
        type=int,
        default=5,
        help="every task depends on the previous one within runs of this length",
    )
    ap.add_argument(
        "--endpoint", help="use this running shard instead of starting one (e.g. one under py-spy)"
    )
    args = ap.parse_args(argv)
    if args.endpoint:
        results, wall = run_workers(args.endpoint, args)
        report(args, results, wall)
        return 0

    tmp = tempfile.mkdtemp(prefix="fedbench-")
    schema = f"fedbench_{uuid.uuid4().hex[:10]}"
    db = f"sqlite:///{tmp}/s0.db" if args.store == "sqlite" else args.pg_url
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    argv_shard = [
        sys.executable,
        "-m",
        "fedctl",
        "shard",
        "serve",
        "--id",
        "bench",
        "--bind",
        endpoint,
        "--db",
        db,
        "--log-level",
        "WARNING",
    ]
    if args.store == "postgres":
        argv_shard += ["--schema", schema]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    shard = subprocess.Popen(argv_shard, env=env)
    try:
        probe = ZmqClient(endpoint, timeout=0.5)
        deadline = time.monotonic() + 30
        while True:
            try:
                probe.call("shard_info", {})
                break
            except FederationError:
                if time.monotonic() > deadline or shard.poll() is not None:
                    raise SystemExit("shard did not start") from None
        probe.close()
        results, wall = run_workers(endpoint, args)
    finally:
        shard.terminate()
        shard.wait(10)
        if args.store == "postgres":
            import sqlalchemy as sa

            eng = sa.create_engine(args.pg_url)
            with eng.begin() as c:
                c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            eng.dispose()
    report(args, results, wall)
    return 0


def run_workers(endpoint: str, args: argparse.Namespace) -> tuple[list[dict], float]:
    out: mp.Queue = mp.Queue()
    t0 = time.perf_counter()
    procs = [
        mp.Process(target=worker_main, args=(endpoint, w, args.tasks_per_worker, args.chain, out))
        for w in range(args.workers)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return results, time.perf_counter() - t0


def report(args: argparse.Namespace, results: list[dict], wall: float) -> None:
    total = sum(r["done"] for r in results)
    registered = sum(r["registered"] for r in results)
    lat = [x for r in results for x in r["lat"]]
    reg_rate = registered / max(r["t_reg"] for r in results)
    run_rate = total / max(r["t_run"] for r in results)
    print(f"store={args.endpoint or args.store} workers={args.workers} tasks={registered}")
    print(f"  registration     : {reg_rate:8.0f} add_task/s (all workers together)")
    print(f"  completion       : {run_rate:8.0f} tasks/s (get_work + add_task DONE)")
    print(f"  wall (whole run) : {wall:8.2f} s -> {total / wall:.0f} tasks/s end to end")
    print(f"  get_work latency : p50 {statistics.median(lat) * 1e3:.2f} ms  p99 {pct(lat, 99) * 1e3:.2f} ms")
    assert total == registered, f"completed {total} of {registered}"


if __name__ == "__main__":
    sys.exit(main())
