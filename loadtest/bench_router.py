"""The router in the path: latency against a direct shard call, and end-to-end tasks/s.

Starts real processes on 127.0.0.1 (federated shards on fresh SQLite files, or Postgres schemas
dropped afterwards, and a router) and measures:

1. **Latency**, one request in flight, per method: the same call sent straight to the shard and
   through the router (1 shard), p50/p99 and the ratio.
2. **Throughput**: W worker processes, each registering its own tasks (``add_task`` + ``add_worker``)
   and then looping ``get_work`` -> ``add_task(DONE)`` until nothing is left, through the router
   in front of 1 and of 3 shards. Prints tasks/s of the run phase.

    python -m loadtest.bench_router                       # both parts, SQLite
    python -m loadtest.bench_router --part latency --calls 3000
    python -m loadtest.bench_router --part throughput --workers 8 32 --shards 1 3 --tasks 2000
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
from typing import Any

from federation.config import FederationConfig, RouterConfig, ShardSpec
from federation.errors import FederationError
from federation.transport import ZmqClient

ROOT = Path(__file__).resolve().parent.parent
SHARD_MAIN = (
    "import sys; from fedctl.cli import main; "
    "sys.exit(main(['shard', 'serve', '--config', sys.argv[1], '--id', sys.argv[2]]))"
)
ROUTER_MAIN = (
    "import sys; from federation.config import load_federation_config; from router.server import serve; "
    "sys.exit(serve(load_federation_config(sys.argv[1])))"
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(endpoint: str, method: str) -> Any:
    c = ZmqClient(endpoint, timeout=0.5)
    try:
        return c.call(method, {})
    except FederationError:
        return None
    finally:
        c.close()


class Federation:
    """Shards and a router as child processes, like ``fedctl up``."""

    def __init__(self, n_shards: int, workdir: Path, pg_url: str | None = None) -> None:
        self.workdir = workdir
        self.pg_url = pg_url
        self.schemas = [f"bench_{uuid.uuid4().hex[:10]}" for _ in range(n_shards)] if pg_url else []
        shards = tuple(
            ShardSpec(
                f"s{i}",
                f"tcp://127.0.0.1:{_free_port()}",
                pg_url or f"sqlite:///{workdir / f's{i}.db'}",
                self.schemas[i] if pg_url else None,
            )
            for i in range(n_shards)
        )
        self.config = FederationConfig(
            shards=shards,
            groups={"default": tuple(s.id for s in shards)},
            router=RouterConfig(zmq=f"tcp://127.0.0.1:{_free_port()}", http=None, timeout=30.0),
        )
        self.path = workdir / "federation.toml"
        self.path.write_text(self.config.to_toml())
        self.procs: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, code: str, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code, *args], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        )

    def start(self) -> Federation:
        for s in self.config.shards:
            self._spawn(s.id, SHARD_MAIN, str(self.path), s.id)
        for s in self.config.shards:
            _wait(lambda s=s: _answers(s.endpoint, "shard_info"), f"shard {s.id}")
        self._spawn("router", ROUTER_MAIN, str(self.path))
        _wait(
            lambda: (h := _answers(self.endpoint, "federation_health")) and all(x["up"] for x in h["shards"]),
            "router",
        )
        return self

    @property
    def endpoint(self) -> str:
        return self.config.router.zmq

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.pg_url and self.schemas:
            import sqlalchemy as sa

            eng = sa.create_engine(self.pg_url)
            with eng.begin() as conn:
                for schema in self.schemas:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            eng.dispose()


def _wait(cond: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- latency ---------------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def latency(calls: int, pg_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        fed = Federation(1, Path(tmp), pg_url).start()
        try:
            direct = ZmqClient(fed.config.shards[0].endpoint, timeout=30)
            routed = ZmqClient(fed.endpoint, timeout=30)
            worker = "bench-latency"
            ids = [f"bench.L_{i}_{uuid.uuid4().hex[:10]}" for i in range(calls)]
            for tid in ids[:50]:
                direct.call("add_task", {"task_id": tid, "worker": worker, "family": "bench.L"})
            # a worker both sides know, with nothing it may run: get_work walks the shard, hands out nothing
            routed.call(
                "add_task",
                {
                    "task_id": f"bench.Idle_{uuid.uuid4().hex[:10]}",
                    "worker": "bench-idle",
                    "family": "bench.Idle",
                    "runnable": False,
                },
            )
            cases: list[tuple[str, Any]] = [
                (
                    "add_task",
                    lambda i: (
                        "add_task",
                        {"task_id": ids[i], "worker": worker, "family": "bench.L", "priority": i % 3},
                    ),
                ),
                (
                    "set_task_status_message",
                    lambda i: ("set_task_status_message", {"task_id": ids[i % 50], "status_message": str(i)}),
                ),
                ("get_task_status_message", lambda i: ("get_task_status_message", {"task_id": ids[i % 50]})),
                ("ping", lambda i: ("ping", {"worker": worker})),
                ("count_pending", lambda i: ("count_pending", {"worker": worker})),
                (
                    "get_work (nothing to hand out)",
                    lambda i: ("get_work", {"worker": "bench-idle", "current_tasks": []}),
                ),
            ]
            print(
                f"latency, one request in flight, {calls} calls per method ({'postgres' if pg_url else 'sqlite'})"
            )
            print(
                f"{'method':34} {'direct p50':>10} {'p99':>8} {'router p50':>10} {'p99':>8} {'p50 x':>6} {'p99 x':>6}"
            )
            for name, make in cases:
                results: dict[str, list[float]] = {}
                # interleave direct and routed blocks so both see the same machine state
                for label, client in (
                    ("direct", direct),
                    ("router", routed),
                    ("direct2", direct),
                    ("router2", routed),
                ):
                    lat = []
                    for i in range(calls // 2):
                        method, kwargs = make(i if label in ("direct", "router") else i + calls // 2)
                        t0 = time.perf_counter()
                        client.call(method, kwargs)
                        lat.append((time.perf_counter() - t0) * 1e6)
                    results.setdefault(label.rstrip("2"), []).extend(lat)
                d, r = results["direct"], results["router"]
                print(
                    f"{name:34} {_pct(d, 0.5):10.0f} {_pct(d, 0.99):8.0f} {_pct(r, 0.5):10.0f} {_pct(r, 0.99):8.0f} "
                    f"{_pct(r, 0.5) / _pct(d, 0.5):6.2f} {_pct(r, 0.99) / _pct(d, 0.99):6.2f}"
                )
            print("(microseconds)")
            direct.close()
            routed.close()
        finally:
            fed.stop()


# -- throughput ------------------------------------------------------------------------------------
def _worker(endpoint: str, wid: int, n_tasks: int, start: Any, out: Any) -> None:
    client = ZmqClient(endpoint, timeout=60)
    worker = f"bench-{wid}-{uuid.uuid4().hex[:6]}"
    ids = [f"bench.T_{wid}_{i}_{uuid.uuid4().hex[:10]}" for i in range(n_tasks)]
    t0 = time.perf_counter()
    for i, tid in enumerate(ids):
        client.call(
            "add_task", {"task_id": tid, "worker": worker, "family": "bench.T", "params": {"i": str(i)}}
        )
    client.call("add_worker", {"worker": worker, "info": [["workers", 1], ["host", "bench"]]})
    registered = time.perf_counter() - t0
    start.wait()
    t1 = time.perf_counter()
    done = 0
    lat = []
    while True:
        s = time.perf_counter()
        reply = client.call("get_work", {"worker": worker, "host": "bench", "current_tasks": []})
        lat.append(time.perf_counter() - s)
        tid = reply.get("task_id")
        if tid is None:
            break
        client.call(
            "add_task",
            {"task_id": tid, "worker": worker, "status": "DONE", "runnable": None, "family": "bench.T"},
        )
        done += 1
    out.put((n_tasks, registered, done, time.perf_counter() - t1, t1, time.perf_counter(), lat))
    client.close()


def throughput(
    n_shards: int, n_workers: int, tasks: int, pg_url: str | None, *, direct: bool = False
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        fed = Federation(n_shards, Path(tmp), pg_url).start()
        try:
            ctx = mp.get_context("fork")
            start = ctx.Event()
            out = ctx.Queue()
            per = max(1, tasks // n_workers)
            target = fed.config.shards[0].endpoint if direct else fed.endpoint
            procs = [ctx.Process(target=_worker, args=(target, w, per, start, out)) for w in range(n_workers)]
            t_reg = time.perf_counter()
            for p in procs:
                p.start()
            # registration runs first in every worker; the run phase starts together
            time.sleep(0.1)
            results: list[Any] = []
            start.set()
            for _ in procs:
                results.append(out.get(timeout=600))
            for p in procs:
                p.join(30)
            reg_wall = max(r[1] for r in results)
            run_wall = max(r[5] for r in results) - min(r[4] for r in results)
            done = sum(r[2] for r in results)
            lat = [x for r in results for x in r[6]]
            total = sum(r[0] for r in results)
            assert done == total, f"{done} of {total} tasks done"
            del t_reg
            return {
                "tasks": total,
                "add_per_s": total / reg_wall,
                "tasks_per_s": done / run_wall,
                "get_work_p50_ms": statistics.median(lat) * 1000,
                "get_work_p99_ms": _pct(lat, 0.99) * 1000,
            }
        finally:
            fed.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["latency", "throughput", "both"], default="both")
    p.add_argument("--calls", type=int, default=2000, help="calls per method for the latency part")
    p.add_argument("--shards", type=int, nargs="+", default=[1, 3])
    p.add_argument("--workers", type=int, nargs="+", default=[8, 32])
    p.add_argument(
        "--tasks", type=int, default=2000, help="tasks per throughput run (split over the workers)"
    )
    p.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the workers straight against one shard, without the router",
    )
    p.add_argument("--pg-url", default=None, help="run the shards on Postgres schemas (dropped afterwards)")
    args = p.parse_args(argv)
    if args.part in ("latency", "both"):
        latency(args.calls, args.pg_url)
    if args.part in ("throughput", "both"):
        print(
            f"\nthroughput through the router ({'postgres' if args.pg_url else 'sqlite'}), {args.tasks} tasks per run"
        )
        print(
            f"{'shards':>14} {'workers':>7} {'add_task/s':>10} {'tasks/s':>8} {'get_work p50 ms':>15} {'p99 ms':>7}"
        )
        runs = [(1, w, True) for w in args.workers] if args.baseline else []
        runs += [(n, w, False) for n in args.shards for w in args.workers]
        for n_shards, n_workers, direct in runs:
            r = throughput(n_shards, n_workers, args.tasks, args.pg_url, direct=direct)
            label = "1, no router" if direct else str(n_shards)
            print(
                f"{label:>14} {n_workers:7} {r['add_per_s']:10.0f} {r['tasks_per_s']:8.0f} "
                f"{r['get_work_p50_ms']:15.2f} {r['get_work_p99_ms']:7.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
