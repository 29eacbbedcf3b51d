"""One load-test run: a DAG, one or more targets (a federation over ZeroMQ and/or HTTP, a stock
luigid), two phases each (registration, then the run), checks and measurements.

:func:`run` returns the report rows (one per target and phase, see :mod:`loadtest.report`) and
the check reports; ``fedctl loadtest run`` (:mod:`loadtest.command`) adds the progress bar, the
summary table and the Parquet file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from federation.config import SchedulerConfig
from loadtest import procstats
from loadtest.checks import CheckReport, Trace, check
from loadtest.dag import RESOURCE, Dag, DagSpec, build_dag
from loadtest.drivers import REPORT_DONE, Driver, DriverConfig, WorkerResult, plan_workers
from loadtest.luigid import Luigid
from loadtest.servers import DEFAULT_PG_URL, ROOT, LocalFederation, RemoteFederation

#: progress callback: (target label, phase, done, total)
Progress = Callable[[str, str, int, int], None]


@dataclass
class RunOptions:
    """Everything ``fedctl loadtest run`` accepts (see its --help)."""

    days: int = 2
    topics: int = 3
    workers: int = 4
    shape: str = "many"
    via: tuple[str, ...] = ("zmq",)
    router: str | None = None
    config: str | None = None
    shards: int | None = None
    store: str = "sqlite"
    pg_url: str = DEFAULT_PG_URL
    against_luigid: bool = False
    #: the started federation secured (CURVE, tokens; docs/security.md): the cost A/B
    secure: bool = False
    units: tuple[str, ...] = ("fin", "mkt", "ops")
    fan_in: int = 2
    fan_out: int = 10
    priorities: bool = True
    fail_rate: float = 0.0
    perm_fail_rate: float = 0.0
    resources: int = 0
    seed: int = 1
    start: str = "2026-01-01"
    task_ms: float = 0.0
    wait_interval: float = 0.05
    wait_jitter: float = 0.05
    timeout: float = 60.0
    retry_delay: float = 1.0
    prune_every: float = 1.0
    stall_timeout: float = 120.0
    deadline: float | None = None
    label: str = ""
    keep: bool = False
    #: ``--chaos SPEC`` (:mod:`loadtest.chaos`): faults injected into the started federation
    chaos: str | None = None

    def spec(self, run: str) -> DagSpec:
        return DagSpec(
            days=self.days,
            topics=self.topics,
            run=run,
            start=self.start,
            units=self.units,
            fan_in=self.fan_in,
            fan_out=self.fan_out,
            priorities=self.priorities,
            fail_rate=self.fail_rate,
            perm_fail_rate=self.perm_fail_rate,
            resources=self.resources,
            seed=self.seed,
        )

    def targets(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.router or self.shards:
            out += [("federation", v) for v in self.via]
        if self.against_luigid:
            out.append(("luigid", "http"))
        return out


@dataclass
class TargetOutcome:
    target: str
    via: str
    rows: list[dict[str, Any]]
    checks: CheckReport
    notes: list[str] = field(default_factory=list)
    dag: Dag | None = None


@dataclass
class RunOutcome:
    run_id: str
    targets: list[TargetOutcome]

    @property
    def ok(self) -> bool:
        return all(t.checks.ok for t in self.targets)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for t in self.targets for r in t.rows]


def run(opts: RunOptions, progress: Progress | None = None, log: Callable[[str], None] = print) -> RunOutcome:
    """Run every target of ``opts`` in turn on the same DAG."""
    targets = opts.targets()
    if not targets:
        raise ValueError("nothing to run against: give --router ADDR or --shards N, and/or --against luigid")
    chaos_spec = None
    if opts.chaos:
        from loadtest.chaos import parse_spec

        chaos_spec = parse_spec(opts.chaos)
        if not opts.shards or opts.store != "postgres" or opts.router or opts.against_luigid:
            raise ValueError(
                "--chaos needs --shards N --store postgres and no --router/--against: it injects faults "
                "into a federation it starts, with Postgres stores in a throwaway cluster it restarts"
            )
    run_id = uuid.uuid4().hex[:8]
    dag = build_dag(opts.spec(f"r{run_id}"))
    log(
        f"run {run_id}: {len(dag)} tasks ({opts.days} days x {opts.topics} topics), {dag.n_edges} dependencies, "
        f"{opts.workers} {'worker ids' if opts.shape == 'many' else 'slots of one worker id'}"
    )
    outcomes = []
    remote = RemoteFederation(opts.router, opts.config) if opts.router else None
    pg = None
    if chaos_spec is not None:
        from loadtest.pgcluster import PgCluster

        pg = PgCluster().start()
        log(f"chaos: a throwaway Postgres cluster on {pg.url} ({chaos_spec.describe()})")
    try:
        for k, (target, via) in enumerate(targets):
            outcomes.append(
                _run_one(opts, dag, k, target, via, run_id, remote, pg, chaos_spec, progress, log)
            )
    finally:
        if pg is not None:
            pg.stop()
    return RunOutcome(run_id, outcomes)


def _run_one(
    opts: RunOptions,
    dag: Dag,
    k: int,
    target: str,
    via: str,
    run_id: str,
    remote: RemoteFederation | None,
    pg: Any,
    chaos_spec: Any,
    progress: Progress | None,
    log: Callable[[str], None],
) -> TargetOutcome:
    this = dag
    if remote is not None and target == "federation" and k > 0:
        this = build_dag(opts.spec(f"r{run_id}x{k}"))  # same shape, new ids on the same scheduler
    server: Any
    if target == "luigid":
        server = Luigid(retry_delay=opts.retry_delay, resources=_resources(opts))
    elif remote is not None:
        server = remote
    else:
        assert opts.shards
        server = LocalFederation(
            opts.shards,
            store=opts.store,
            pg_url=pg.url if pg is not None else opts.pg_url,
            keep=opts.keep,
            scheduler=SchedulerConfig(retry_delay=opts.retry_delay, resources=_resources(opts)),
            secure=opts.secure,
            **(
                {
                    "standbys": chaos_spec.standbys,
                    "session_timeout": chaos_spec.session_timeout,
                    # a frozen shard's calls fail (and are retried) after this, not after 30 s
                    "router_timeout": 10.0,
                }
                if chaos_spec is not None
                else {}
            ),
        )
    t0 = time.monotonic()
    server.start()
    log(
        f"{target} ({via}) up in {time.monotonic() - t0:.1f} s"
        + (f": {opts.shards} shard(s) on {opts.store}" if isinstance(server, LocalFederation) else "")
        + (f", {chaos_spec.standbys} standby each" if chaos_spec is not None else "")
    )
    chaos = None
    if chaos_spec is not None:
        from loadtest.chaos import Chaos

        chaos = Chaos(chaos_spec, server, pg, log)
    try:
        outcome = run_target(opts, this, server, target, via, run_id, progress, log, chaos=chaos)
    finally:
        if chaos is not None:
            chaos.stop()
        server.stop()
    log(f"{target} ({via}): {outcome.checks.summary()}")
    return outcome


def _resources(opts: RunOptions) -> dict[str, int]:
    return {RESOURCE: opts.resources} if opts.resources else {}


class _Pruner(threading.Thread):
    """Calls ``prune`` every few seconds, so FAILED tasks come back after ``retry_delay``.

    luigid prunes every 60 s on its own (and a shard every ``--prune-interval``); a run with
    planned failures would otherwise wait for that.  It is the same call for both.
    """

    def __init__(self, server: Any, every: float) -> None:
        super().__init__(daemon=True, name="loadtest-prune")
        self.server, self.every = server, every
        self.stopped = threading.Event()
        self.calls = 0

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.server.call("prune", {}, timeout=60.0)
                self.calls += 1
            except Exception:
                pass  # the next tick tries again; a dead server shows up as a stall


def run_target(
    opts: RunOptions,
    dag: Dag,
    server: Any,
    target: str,
    via: str,
    run_id: str,
    progress: Progress | None = None,
    log: Callable[[str], None] = lambda _m: None,
    chaos: Any = None,
) -> TargetOutcome:
    label = f"{target}/{via}"
    notes: list[str] = []
    cfg = DriverConfig(
        server.endpoint(via),
        task_ms=opts.task_ms,
        wait_interval=opts.wait_interval,
        wait_jitter=opts.wait_jitter,
        timeout=opts.timeout,
    )
    plans = plan_workers(dag, opts.shape, opts.workers)
    federation = target == "federation"
    health0 = server.health() if federation else None
    driver = Driver(dag, plans, cfg)
    driver.start()

    # the workers report their own CPU (they exit before the last snapshot); this process is sampled
    def roles() -> dict[str, list[int]]:
        r = server.roles()
        r["driver"] = [os.getpid()]
        return r

    deadline = time.monotonic() + opts.deadline if opts.deadline else None
    r0 = roles()
    s0 = procstats.snapshot(r0)
    t_reg = time.monotonic()
    if chaos is not None:
        # faults from the start of registration to the end of the run; progress (for the stalls) is
        # every acknowledged registration and every completed task
        chaos.start(lambda: driver.registered() + driver.done())
    registered = driver.register(
        (lambda n: progress(label, "register", n, driver.registration_calls)) if progress else None, deadline
    )
    r1 = roles()
    s1 = procstats.snapshot(r1)
    log(
        f"{label}: registered {driver.registered()} tasks in {time.monotonic() - t_reg:.1f} s"
        + ("; the run starts" if registered else f"; stopped: {driver.stall}")
    )
    pruner = _Pruner(server, opts.prune_every) if (opts.fail_rate or opts.perm_fail_rate) else None
    expected_done = sum(1 for s in dag.expected_status() if s == "DONE")
    if registered:
        if pruner:
            pruner.start()
        driver.run(
            (lambda n: progress(label, "run", n, expected_done)) if progress else None,
            stall_timeout=opts.stall_timeout,
            deadline=deadline,
            expected_done=expected_done,
        )
        if pruner:
            pruner.stopped.set()
        log(
            f"{label}: {driver.done()} tasks done in {time.monotonic() - t_reg:.1f} s since registration began"
        )
    else:
        driver.abort()
        driver.close()
    chaos_result = chaos.stop() if chaos is not None else None
    r2 = roles()
    s2 = procstats.snapshot(r2)
    server_roles = {k: v for k, v in r2.items() if k not in ("driver", "postgres")}
    peak_rss = {pid: procstats.peak_rss_mb(pid) or 0.0 for pids in server_roles.values() for pid in pids}

    final: dict[str, str] | None = None
    try:
        final = fetch_final(server, dag)
    except Exception as e:  # reported as a check failure below
        notes.append(f"final state not fetched: {e}")
    health1 = server.health() if federation else None

    results = [driver.results[p.wid] for p in plans]
    if driver.stall:
        notes.extend(_waiting_workers(server, [r for r in results if r.stopped]))
    trace = Trace.from_results(results)
    if driver.stall:
        trace.problems.insert(0, driver.stall)
    if final is None:
        trace.problems.append(notes[-1])
    checks = check(dag, trace, final)
    if chaos_result is not None:
        for problem in chaos_result.problems():
            checks.add("chaos", problem)
        notes.extend(f.line() for f in chaos_result.faults)
        notes.append(chaos_result.summary())

    base = _base_row(opts, dag, run_id, target, via, server)
    base["checks_ok"] = checks.ok
    base["violations"] = checks.violations
    base["check_summary"] = checks.summary()
    if federation:
        base.update(_placement_metrics(dag, server, health0, health1))
        if getattr(server, "placement_note", ""):
            notes.append(server.placement_note)
    base["server_peak_rss_mb"] = round(sum(peak_rss.values()), 1)
    base["server_processes"] = len(peak_rss)

    reg_cpu = procstats.delta(s0, s1, _union(r0, r1))
    run_cpu = procstats.delta(s1, s2, _union(r1, r2))
    reg_cpu["driver"] = reg_cpu.get("driver", 0.0) + sum(r.cpu_reg for r in results)
    run_cpu["driver"] = run_cpu.get("driver", 0.0) + sum(r.cpu_run for r in results)
    reg_row = {
        **base,
        "phase": "register",
        **_register_metrics(results, plans),
        **_cpu_metrics(reg_cpu, target),
    }
    run_row = {**base, "phase": "run", **_run_metrics(results), **_cpu_metrics(run_cpu, target)}
    for row in (reg_row, run_row):
        n = row["calls"] if row["phase"] == "register" else row["tasks_done"]
        row["server_cpu_ms_per_item"] = round(row["server_cpu_s"] * 1000.0 / n, 4) if n else None
        row["foreign_cores"] = (
            round(max(0.0, row["machine_busy_cores"] - row["known_cpu_s"] / row["seconds"]), 3)
            if row["seconds"]
            else None
        )
    if pruner:
        run_row["prune_calls"] = pruner.calls
    if chaos_result is not None:
        run_row["chaos_faults"] = chaos_result.injected
        run_row["chaos_longest_stall_s"] = round(chaos_result.longest_stall, 2)
        run_row["chaos_spec"] = chaos.spec.describe()
    return TargetOutcome(target, via, [reg_row, run_row], checks, notes, dag)


def _waiting_workers(server: Any, stopped: list[WorkerResult]) -> list[str]:
    """What the scheduler still counts for workers that were stopped (why they kept polling)."""
    out = []
    for r in stopped[:5]:
        try:
            c = server.call("count_pending", {"worker": r.worker_id}, timeout=10.0)
            out.append(
                f"worker {r.wid}: count_pending says n_pending_tasks={c.get('n_pending_tasks')}, "
                f"running={len(c.get('running_tasks') or [])}"
            )
        except Exception as e:
            out.append(f"worker {r.wid}: count_pending failed: {e}")
    return out


def _union(a: dict[str, list[int]], b: dict[str, list[int]]) -> dict[str, list[int]]:
    return {k: sorted(set(a.get(k, [])) | set(b.get(k, []))) for k in set(a) | set(b)}


def fetch_final(server: Any, dag: Dag) -> dict[str, str]:
    """The scheduler's status of every task of the DAG (``task_list`` without a limit)."""
    res = server.call("task_list", {"status": "", "upstream_status": "", "limit": False}, timeout=300.0)
    if not isinstance(res, dict):
        raise ValueError(f"task_list answered {type(res).__name__}")
    if set(res) == {"num_tasks"}:
        raise ValueError(f"task_list refused to list {res['num_tasks']} tasks")
    index = dag.index
    # a row without a status counts as missing from the final state
    return {
        tid: status
        for tid, row in res.items()
        if tid in index and isinstance(row, dict) and isinstance(status := row.get("status"), str)
    }


def _git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _base_row(opts: RunOptions, dag: Dag, run_id: str, target: str, via: str, server: Any) -> dict[str, Any]:
    spec = asdict(dag.spec)
    return {
        "run_id": run_id,
        "label": opts.label,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "git_rev": _git_rev(),
        "target": target,
        "via": via,
        "shape": opts.shape,
        "workers": opts.workers,
        "shards": (
            server.n
            if isinstance(server, LocalFederation)
            else len(server.placement.shard_ids)
            if target == "federation"
            else None
        ),
        "store": (
            server.store
            if isinstance(server, LocalFederation)
            else "remote"
            if target == "federation"
            else "memory"
        ),
        "days": spec["days"],
        "topics": spec["topics"],
        "tasks": len(dag),
        "edges": dag.n_edges,
        "fan_in": spec["fan_in"],
        "fan_out": spec["fan_out"],
        "priorities": spec["priorities"],
        "fail_rate": spec["fail_rate"],
        "perm_fail_rate": spec["perm_fail_rate"],
        "resources": spec["resources"],
        "task_ms": opts.task_ms,
        "wait_interval": opts.wait_interval,
        "retry_delay": opts.retry_delay,
    }


def _pct(values: Any, q: float) -> float | None:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return round(float(np.percentile(arr, q)) * 1000.0, 3) if arr.size else None


def _register_metrics(results: list[WorkerResult], plans: list[Any]) -> dict[str, Any]:
    calls = sum(r.registered for r in results)
    t0 = min((r.reg_t0 for r in results if r.reg_t0), default=0.0)
    t1 = max((r.reg_t1 for r in results if r.reg_t1), default=0.0)
    secs = max(t1 - t0, 1e-9) if t1 else 0.0
    lat = [x for r in results for x in r.reg_lat]
    return {
        "calls": calls,
        "seconds": round(secs, 3),
        "rate_per_s": round(calls / secs, 1) if secs else None,
        "lat_p50_ms": _pct(lat, 50),
        "lat_p95_ms": _pct(lat, 95),
        "lat_p99_ms": _pct(lat, 99),
        "tasks_done": 0,
        "timeline": [],
    }


def _run_metrics(results: list[WorkerResult]) -> dict[str, Any]:
    import numpy as np

    t0 = min((r.run_t0 for r in results if r.run_t0), default=0.0)
    t1 = max((r.run_t1 for r in results if r.run_t1), default=0.0)
    secs = max(t1 - t0, 1e-9) if t0 else 0.0
    done_t = np.array(
        [t for r in results for t, st in zip(r.rep_t1, r.rep_status, strict=True) if st == REPORT_DONE]
    )
    done = int(done_t.size)
    timeline = np.bincount(((done_t - t0) // 1.0).astype(int)).tolist() if done else []
    gw = [x for r in results for x in r.gw_lat]
    rep = [b - a for r in results for a, b in zip(r.rep_t0, r.rep_t1, strict=True)]
    counters: Counter[str] = Counter()
    for r in results:
        counters.update(r.counters)
    grants = sum(len(r.grant_idx) for r in results)
    return {
        "calls": sum(v for k, v in counters.items() if k != "retries") + sum(r.pings for r in results),
        "seconds": round(secs, 3),
        "rate_per_s": round(done / secs, 1) if secs else None,
        "tasks_done": done,
        "grants": grants,
        "get_work_calls": len(gw),
        "empty_get_work": len(gw) - grants,
        "lat_p50_ms": _pct(gw, 50),
        "lat_p95_ms": _pct(gw, 95),
        "lat_p99_ms": _pct(gw, 99),
        "report_p50_ms": _pct(rep, 50),
        "report_p99_ms": _pct(rep, 99),
        "pings": sum(r.pings for r in results),
        "ping_errors": sum(r.ping_errors for r in results),
        "retries": counters.get("retries", 0),
        "timeline": [float(x) for x in timeline],
    }


def _cpu_metrics(cpu: dict[str, float], target: str) -> dict[str, Any]:
    server = cpu.get("luigid", 0.0) if target == "luigid" else cpu.get("router", 0.0) + cpu.get("shards", 0.0)
    known = server + cpu.get("postgres", 0.0) + cpu.get("driver", 0.0)
    return {
        "server_cpu_s": round(server, 3),
        "router_cpu_s": round(cpu.get("router", 0.0), 3),
        "shards_cpu_s": round(cpu.get("shards", 0.0), 3),
        "postgres_cpu_s": round(cpu.get("postgres", 0.0), 3),
        "driver_cpu_s": round(cpu.get("driver", 0.0), 3),
        "known_cpu_s": round(known, 3),
        "machine_busy_cores": round(cpu.get("machine_busy_cores", 0.0), 3),
    }


def _counts_by_shard(health: dict[str, Any] | None) -> dict[str, int]:
    if not health:
        return {}
    return {s["shard_id"]: sum((s.get("counts") or {}).values()) for s in health["shards"]}


def _placement_metrics(
    dag: Dag, server: Any, health0: dict[str, Any] | None, health1: dict[str, Any] | None
) -> dict[str, Any]:
    """Per-shard balance (the shards' own counts, before and after) and cross-shard edges (placement)."""
    before, after = _counts_by_shard(health0), _counts_by_shard(health1)
    per_shard = {sid: after.get(sid, 0) - before.get(sid, 0) for sid in after}
    owner = server.placement.owner
    predicted = Counter(owner(t) for t in dag.ids)
    crossing = sum(1 for i, d in dag.edges() if owner(dag.ids[i]) != owner(dag.ids[d]))
    mean = sum(per_shard.values()) / len(per_shard) if per_shard else 0
    return {
        "shard_tasks": json.dumps(per_shard, sort_keys=True),
        "placement_tasks": json.dumps(dict(sorted(predicted.items()))),
        "balance_max_over_mean": round(max(per_shard.values()) / mean, 3) if mean else None,
        "cross_shard_edges": round(crossing / dag.n_edges, 4) if dag.n_edges else 0.0,
    }
