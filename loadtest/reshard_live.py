"""Online resharding under the load test, with real processes (``python -m loadtest.reshard_live``).

A 3-shard federation (router and shards as separate ``fedctl`` processes, SQLite or Postgres
stores) runs the load test (``loadtest.runner``: simulated Luigi workers, every correctness
check); while it runs, ``fedctl reshard apply`` (the real CLI, in its own process)

1. grows it to 4 shards (``s3`` joins the default group),
2. moves the namespace ``fin`` to a group of its own (a new shard ``f0``),
3. drains ``s1`` (its tasks go to the other shards of the default group; then it is stopped).

It prints, per move, the tasks moved and the time it took (from the CLI's summary), the
longest a call waited in the router for a move, the longest time no task completed (the
load test's per-second timeline), and the load test's checks; the exit code is 0 only if every
check passed and every move finished.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federation.config import FederationConfig, RouterConfig, SchedulerConfig, ShardSpec
from federation.transport import ZmqClient
from loadtest.runner import RunOptions, run
from loadtest.servers import DEFAULT_PG_URL, drop_schemas, free_port

FEDCTL = [sys.executable, "-m", "fedctl"]


class Cluster:
    """Router and shards as processes, each started from the federation.toml it was given."""

    def __init__(self, workdir: Path, store: str, pg_url: str) -> None:
        self.dir = workdir
        self.store = store
        self.pg_url = pg_url
        self.prefix = f"rs_{os.getpid()}_"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Any] = {}
        self.schemas: list[str] = []

    def spec(self, sid: str) -> ShardSpec:
        if self.store == "sqlite":
            return ShardSpec(sid, f"tcp://127.0.0.1:{free_port()}", f"sqlite:///{self.dir / f'{sid}.db'}")
        schema = f"{self.prefix}{sid}".replace("-", "_")
        self.schemas.append(schema)
        return ShardSpec(sid, f"tcp://127.0.0.1:{free_port()}", self.pg_url, schema)

    def write(self, name: str, config: FederationConfig) -> Path:
        path = self.dir / name
        path.write_text(config.to_toml())
        return path

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.logs[name] = log
        self.procs[name] = subprocess.Popen([*FEDCTL, *args], stdout=log, stderr=subprocess.STDOUT)

    def stop_one(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_one(name)
        for log in self.logs.values():
            log.close()
        if self.schemas:
            drop_schemas(self.pg_url, self.schemas)


def wait_up(router: str, shard_ids: list[str], timeout: float = 60.0) -> None:
    client = ZmqClient(router, timeout=5.0)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                health = client.call("federation_health", {})
                up = {s["shard_id"] for s in health["shards"] if s["up"]}
                if set(shard_ids) <= up:
                    return
            except Exception:
                pass
            time.sleep(0.2)
    finally:
        client.close()
    raise RuntimeError(f"federation not up in {timeout:g} s")


def done_count(router: str) -> int:
    client = ZmqClient(router, timeout=10.0)
    try:
        health = client.call("federation_health", {})
    finally:
        client.close()
    return sum(int(s["counts"].get("DONE", 0)) for s in health["shards"])


def reshard(router: str, path: Path, crash: Callable[[], None] | None = None) -> dict[str, Any]:
    """``fedctl reshard plan`` then ``apply`` (the real CLI); the summary of the move.

    ``crash``: called once the migration is under way (between its first and its last phase),
    e.g. to kill -9 and restart the router; ``apply`` follows the migration across it."""
    plan = subprocess.run(
        [*FEDCTL, "reshard", "plan", "--router", router, "--to", str(path)], capture_output=True, text=True
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*FEDCTL, "reshard", "apply", "--router", router, "--to", str(path), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    crashed_at = None
    if crash is not None:
        client = ZmqClient(router, timeout=10.0)
        try:
            while proc.poll() is None:
                st = client.call("reshard_status", {})
                if st.get("active") and st.get("phase") in ("copy", "apply", "switch"):
                    crashed_at = st["phase"]
                    break
                time.sleep(0.005)
        finally:
            client.close()
        if crashed_at is not None:
            crash()
    stdout, stderr = proc.communicate()
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    wall = time.monotonic() - t0
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    client = ZmqClient(router, timeout=10.0)
    try:
        st = client.call("reshard_status", {})
    finally:
        client.close()
    m = re.search(r"in ([0-9.]+) s", line)
    return {
        "to": path.name,
        "ok": out.returncode == 0,
        "plan": plan.stdout.strip(),
        "summary": line or out.stderr.strip(),
        "moved": st.get("total"),
        "moves": st.get("moves"),
        "seconds": float(m.group(1)) if m else None,
        "cli_wall_s": round(wall, 2),
        "held_calls": st.get("held"),
        "held_max_s": st.get("held_max_s"),
        "held_expired": st.get("held_expired"),
        "phase_times": st.get("times"),
        "router_killed_at": crashed_at,
    }


def diagnose(path: Path, limit: int = 8) -> list[str]:
    """For a few tasks left PENDING on their owner: each dependency's status there (a mirror, or
    missing) against its owner's."""
    from federation.config import load_federation_config
    from federation.placement import Placement

    config = load_federation_config(str(path))
    placement = Placement.from_config(config)
    clients = {spec.id: ZmqClient(spec.endpoint, timeout=10.0) for spec in config.shards}
    out: list[str] = []
    try:
        for sid, client in clients.items():
            pending = client.call("task_list", {"status": "PENDING", "upstream_status": "", "limit": False})
            for tid in pending:
                if placement.owner(tid) != sid:
                    continue
                graph = client.call("dep_graph", {"task_id": tid, "include_done": True})
                for dep in graph.get(tid, {}).get("deps") or ():
                    here = client.call("fed_status", {"task_ids": [dep]})["tasks"][dep][0]
                    owner = placement.owner(dep)
                    there = clients[owner].call("fed_status", {"task_ids": [dep]})["tasks"][dep][0]
                    if here != there:
                        out.append(f"{tid} on {sid}: dependency {dep} is {here} here, {there} on {owner}")
                if len(out) >= limit:
                    return out
        for sid, client in clients.items():  # no mismatch: what the owners know of the stuck tasks
            pending = client.call("task_list", {"status": "PENDING", "upstream_status": "", "limit": False})
            for tid, t in pending.items():
                if placement.owner(tid) != sid:
                    continue
                graph = client.call("dep_graph", {"task_id": tid, "include_done": True})
                deps = {d: (graph.get(d) or {}).get("status") for d in graph.get(tid, {}).get("deps") or ()}
                out.append(f"{tid} PENDING on {sid}: workers {t.get('workers')}, deps {deps}")
                if len(out) >= limit:
                    return out
    finally:
        for client in clients.values():
            client.close()
    return out or ["no dependency of a PENDING task differs from its owner's status"]


def longest_gap(timeline: list[float]) -> int:
    """Seconds in a row with no task completed, between the first and the last completion."""
    nz = [i for i, x in enumerate(timeline) if x]
    if not nz:
        return 0
    best = cur = 0
    for x in timeline[nz[0] : nz[-1] + 1]:
        cur = cur + 1 if not x else 0
        best = max(best, cur)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--pg-url", default=DEFAULT_PG_URL)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--topics", type=int, default=24)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--task-ms", type=float, default=60.0)
    ap.add_argument("--start-after", type=int, default=300, help="DONE tasks before the first move")
    ap.add_argument("--pause", type=float, default=4.0, help="seconds of load between two moves")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--kill-router",
        action="store_true",
        help="kill -9 the router in the middle of the namespace move, and start it again",
    )
    args = ap.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="reshard-live-"))
    cluster = Cluster(workdir, args.store, args.pg_url)
    router = f"tcp://127.0.0.1:{free_port()}"
    specs = {sid: cluster.spec(sid) for sid in ("s0", "s1", "s2", "s3", "f0")}
    base = FederationConfig(
        shards=tuple(specs[s] for s in ("s0", "s1", "s2")),
        groups={"default": ("s0", "s1", "s2")},
        router=RouterConfig(zmq=router, http=None, timeout=30.0, health_timeout=10.0),
        scheduler=SchedulerConfig(retry_delay=1.0),
    )
    grow = base.replace(shards=base.shards + (specs["s3"],), groups={"default": ("s0", "s1", "s2", "s3")})
    unit = grow.replace(
        shards=grow.shards + (specs["f0"],),
        groups={"default": ("s0", "s1", "s2", "s3"), "fin": ("f0",)},
        namespaces={"fin": "fin"},
    )
    drain = unit.replace(
        shards=tuple(s for s in unit.shards if s.id != "s1"),
        groups={"default": ("s0", "s2", "s3"), "fin": ("f0",)},
    )
    paths = {
        name: cluster.write(f"{name}.toml", cfg)
        for name, cfg in (("federation", base), ("grow", grow), ("unit", unit), ("drain", drain))
    }
    results: dict[str, Any] = {"store": args.store, "moves": []}
    outcome_box: dict[str, Any] = {}
    try:
        cluster.start("router", ["router", "serve", "--config", str(paths["federation"])])
        for sid in ("s0", "s1", "s2"):
            cluster.start(sid, ["shard", "serve", "--config", str(paths["federation"]), "--id", sid])
        wait_up(router, ["s0", "s1", "s2"])
        opts = RunOptions(
            router=router,
            config=str(paths["federation"]),
            days=args.days,
            topics=args.topics,
            workers=args.workers,
            task_ms=args.task_ms,
            timeout=60.0,
            stall_timeout=120.0,
            label="reshard-live",
        )

        def load() -> None:
            try:
                outcome_box["outcome"] = run(opts, log=lambda s: print(f"[load] {s}", flush=True))
            except BaseException as e:  # reported below
                outcome_box["error"] = e

        loader = threading.Thread(target=load, daemon=True)
        t_load = time.monotonic()
        loader.start()
        while loader.is_alive() and done_count(router) < args.start_after:
            time.sleep(0.5)
        steps = [("grow", ["s3"], None), ("unit", ["f0"], None), ("drain", [], "s1")]
        for name, start, stop in steps:
            during = loader.is_alive()
            if not during:
                print(f"[reshard] note: the load ended before {name} (a larger --days/--topics)", flush=True)
            for sid in start:
                cluster.start(sid, ["shard", "serve", "--config", str(paths[name]), "--id", sid])
            before = done_count(router)
            crash = None
            if args.kill_router and name == "unit":

                def crash() -> None:
                    cluster.procs["router"].kill()
                    cluster.procs["router"].wait()
                    del cluster.procs["router"]
                    print("[reshard] router killed (-9); starting it again", flush=True)
                    cluster.start("router", ["router", "serve", "--config", str(paths["federation"])])

            res = reshard(router, paths[name], crash)
            res["done_before"] = before
            res["started_s"] = round(time.monotonic() - t_load, 2)
            res["during_load"] = during and loader.is_alive()
            results["moves"].append(res)
            print(f"[reshard] {name}: {res['summary']}", flush=True)
            if stop:
                cluster.stop_one(stop)
            time.sleep(args.pause)
        loader.join()
        if "error" in outcome_box:
            raise outcome_box["error"]
        outcome = outcome_box["outcome"]
        rows = outcome.rows
        for t in outcome.targets:
            print(f"[load] checks: {t.checks.summary()}")
            results["checks"] = t.checks.summary()
            results["checks_ok"] = t.checks.ok
        run_rows = [r for r in rows if r.get("timeline")]
        if run_rows:
            r = run_rows[0]
            results["load"] = {
                k: r.get(k)
                for k in (
                    "tasks_done",
                    "seconds",
                    "rate_per_s",
                    "lat_p99_ms",
                    "report_p99_ms",
                    "retries",
                    "grants",
                )
            }
            results["longest_no_completion_s"] = longest_gap(r["timeline"])
            results["timeline"] = r["timeline"]
        results["ok"] = (
            bool(outcome.ok) and all(m["ok"] for m in results["moves"]) and len(results["moves"]) == 3
        )
        if not outcome.ok:
            last = "drain" if len(results["moves"]) == 3 else "federation"
            results["diagnosis"] = diagnose(paths[last])
    finally:
        cluster.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}")
    print(json.dumps(results, indent=1, default=str))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    return 0 if results.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
