"""How fast the TUI refreshes a big federation, and how responsive it stays meanwhile.

(It lives in ``tui/`` rather than ``loadtest/`` because ``loadtest`` may not import ``tui``;
see tests/test_layering.py.)

Starts a local federation with ``fedctl up`` (3 shards on SQLite and a router, as child
processes) unless ``--router`` names a running one, loads ``--tasks`` Luigi tasks through the router (daily pipelines over many dates and
topics, mostly DONE, some PENDING/RUNNING/FAILED/DISABLED, in three namespaces), then measures:

1. **One refresh cycle** (:class:`tui.poller.Poller`, no UI), per screen: the header alone
   (``federation_health`` + ``worker_list`` + pause state), the task view as it opens (one
   ``task_list`` per non-empty status, ``max_shown_tasks`` = the TUI's 5,000, so the big statuses
   come back as counts), the task view narrowed to FAILED, the whole list (``max_shown_tasks`` above
   the task count), and the workers view. Median / p90 / max over ``--cycles`` cycles, with the
   slowest call of each.
2. **UI responsiveness while refreshing**: the real app headless (``App.run_test``) on the task
   view, refreshing every ``--refresh`` seconds: how late a 10 ms timer on the UI's event loop
   fires (the time the UI could not react to a key), the time spent on the UI thread applying
   each refresh, and the time from a key (cursor down) to the cursor having moved, during the polls.

    python -m tui.bench                      # 3 shards, 50,000 tasks
    python -m tui.bench --tasks 10000 --cycles 5
    python -m tui.bench --router tcp://127.0.0.1:5555   # an existing federation, no loading
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textual import events

from federation.errors import FederationError
from federation.transport import ZmqClient
from tui.app import FederationApp, Polled
from tui.config import TuiConfig
from tui.model import TaskQuery
from tui.poller import Poller, Wants
from tui.source import RouterSource, Session

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def local_federation(shards: int, workdir: Path) -> Iterator[str]:
    """``fedctl up`` in a child process; yields the router's endpoint once every shard is up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(workdir / "up.log", "ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedctl",
            "up",
            "--shards",
            str(shards),
            "--data-dir",
            str(workdir / "fed"),
            "--zmq",
            endpoint,
            "--http",
            "",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    probe = ZmqClient(endpoint, timeout=1.0)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"fedctl up exited with {proc.returncode}:\n{(workdir / 'up.log').read_text()}"
                )
            try:
                health = probe.call("federation_health", {})
                if all(s["up"] for s in health["shards"]) and len(health["shards"]) == shards:
                    break
            except FederationError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the federation did not come up within 90 s")
            time.sleep(0.2)
        probe.close()
        yield endpoint
    finally:
        probe.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


TOPICS = [f"topic{i:02d}" for i in range(25)]
STAGES = ("Extract", "Transform", "Enrich", "Load")
WORKERS = [
    f"Worker(salt={1000 + i}, workers=4, host=etl-{i:02d}, username=etl, pid={4000 + i})" for i in range(8)
]


def _task_specs(n: int) -> Iterator[dict[str, Any]]:
    """``n`` add_task calls: per (date, topic) a 4-stage chain; ledger and report tasks now and then."""
    from luigi.task import task_id_str

    i = 0
    day = 0
    while True:
        date = f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}"
        recent = day % 40 >= 36  # the last days of each block are still in flight
        for topic in TOPICS:
            prev: list[str] = []
            for stage in STAGES:
                family = (
                    "finance.ledger.Post" if stage == "Load" and topic.endswith("7") else f"daily.{stage}"
                )
                params = {"date": date, "topic": topic}
                tid = task_id_str(family, params)
                if not recent:
                    status = "DONE"
                elif i % 97 == 0:
                    status = "FAILED"
                elif i % 389 == 0:
                    status = "DISABLED"
                elif i % 53 == 0:
                    status = "RUNNING"
                else:
                    status = "PENDING"
                yield {
                    "task_id": tid,
                    "family": family,
                    "params": params,
                    "deps": prev,
                    "status": status,
                    "worker": WORKERS[i % len(WORKERS)],
                    "module": "examples.daily",
                    "expl": "ValueError: boom" if status == "FAILED" else None,
                }
                prev = [tid]
                i += 1
                if i >= n:
                    return
        day += 1


def _load_part(args: tuple[str, int, int, int]) -> int:
    endpoint, n, part, parts = args
    client = ZmqClient(endpoint, timeout=60.0)
    done = 0
    try:
        for k, spec in enumerate(_task_specs(n)):
            if k % parts == part:
                client.call("add_task", spec)
                done += 1
    finally:
        client.close()
    return done


def load(endpoint: str, n: int, procs: int) -> float:
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(procs) as pool:
        total = sum(pool.map(_load_part, [(endpoint, n, p, procs) for p in range(procs)]))
    client = ZmqClient(endpoint, timeout=30.0)
    for w in WORKERS:
        client.call(
            "add_worker", {"worker": w, "info": [["host", w.split("host=")[1].split(",")[0]], ["workers", 4]]}
        )
    client.close()
    elapsed = time.perf_counter() - t0
    print(f"loaded {total:,} tasks in {elapsed:.1f}s ({total / elapsed:,.0f} add_task/s, {procs} processes)")
    return elapsed


# -- 1. refresh cycles ----------------------------------------------------------------------------------
class TimingSource(RouterSource):
    """A RouterSource that remembers how long each call took."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        super().__init__(endpoint, timeout=timeout)
        self.calls: list[tuple[str, float]] = []

    @contextmanager
    def session(self, *, poll: bool = False) -> Iterator[Session]:
        with super().session(poll=poll) as inner:
            yield _TimedSession(inner, self.calls)


class _TimedSession:
    def __init__(self, inner: Session, calls: list[tuple[str, float]]) -> None:
        self.inner, self.calls = inner, calls

    def call(self, method: str, kwargs: dict[str, Any] | None = None) -> Any:
        t0 = time.perf_counter()
        try:
            return self.inner.call(method, kwargs)
        finally:
            label = method + (f"[{kwargs['status']}]" if kwargs and kwargs.get("status") else "")
            self.calls.append((label, (time.perf_counter() - t0) * 1000))


def _stats(values: list[float]) -> str:
    s = sorted(values)
    p90 = s[min(len(s) - 1, int(0.9 * len(s)))]
    return f"median {statistics.median(s):7.1f}  p90 {p90:7.1f}  max {s[-1]:7.1f}"


def refresh_cycles(endpoint: str, cycles: int, n_tasks: int) -> None:
    print("\n1. one refresh cycle (ms), Poller without UI")
    cases = [
        ("header only (shards/namespaces views)", Wants(), TuiConfig()),
        ("task view as opened (max_shown_tasks 5,000)", Wants(tasks=TaskQuery()), TuiConfig()),
        ("task view, status FAILED", Wants(tasks=TaskQuery(status="FAILED")), TuiConfig()),
        (
            "task view, namespace finance.ledger",
            Wants(tasks=TaskQuery(namespace="finance.ledger")),
            TuiConfig(),
        ),
        (
            "task view listing everything",
            Wants(tasks=TaskQuery()),
            TuiConfig(max_tasks=max(n_tasks * 2, 5000)),
        ),
        ("workers view (running tasks)", Wants(workers_running=True), TuiConfig()),
    ]
    for name, wants, config in cases:
        source = TimingSource(endpoint, timeout=120.0)
        poller = Poller(source, config)
        times = []
        rows = 0
        for _ in range(cycles):
            source.calls.clear()
            t0 = time.perf_counter()
            snap = poller.poll(wants)
            times.append((time.perf_counter() - t0) * 1000)
            rows = len(snap.tasks.rows) if snap.tasks else 0
            assert snap.router_ok, snap.router_error
        slowest = max(source.calls, key=lambda c: c[1])
        extra = f"  rows {rows:,}" if wants.tasks else ""
        print(
            f"  {name:<44} {_stats(times)}  calls {len(source.calls)}  slowest {slowest[0]} "
            f"{slowest[1]:.0f}ms{extra}"
        )


# -- 2. the UI while refreshing --------------------------------------------------------------------------
class TimedApp(FederationApp):
    """The app, timing how long each refresh occupies the UI thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.apply_ms: list[float] = []

    def on_polled(self, message: Polled) -> None:
        t0 = time.perf_counter()
        super().on_polled(message)
        self.apply_ms.append((time.perf_counter() - t0) * 1000)


async def _ui(endpoint: str, refresh: float, seconds: float, config: TuiConfig, view: str) -> dict[str, Any]:
    app = TimedApp(RouterSource(endpoint, timeout=120.0), config.replace(refresh=refresh))
    lags: list[float] = []
    keys: list[float] = []
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("colon", *view, "enter")
        deadline = time.monotonic() + 120
        while app.polls < 2 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        start_polls = app.polls
        table = app.screen.current_view.table  # type: ignore[attr-defined]
        end = time.monotonic() + seconds
        next_key = time.monotonic()
        while time.monotonic() < end:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append((time.perf_counter() - t0) * 1000 - 10)
            if time.monotonic() >= next_key and table.row_count > 1:
                # a key as the terminal sends it, timed until the cursor has moved (the pilot's own
                # press() waits for the whole process to be idle, poll thread included: not a UI figure)
                before = table.cursor_row
                key = "down" if before < table.row_count - 1 else "up"
                t0 = time.perf_counter()
                driver = app._driver
                assert driver is not None, "the app runs headless under run_test(): it has a driver"
                driver.send_message(events.Key(key, None))
                while table.cursor_row == before and time.perf_counter() - t0 < 30:
                    await asyncio.sleep(0.001)
                keys.append((time.perf_counter() - t0) * 1000)
                next_key = time.monotonic() + 0.25
        polls = app.polls - start_polls
    return {"lags": lags, "keys": keys, "apply": app.apply_ms[2:], "polls": polls}


def ui_responsiveness(endpoint: str, refresh: float, seconds: float, n_tasks: int) -> None:
    print(f"\n2. the UI while refreshing every {refresh:g}s for {seconds:g}s (ms)")
    for name, config, view in (
        ("task view as opened", TuiConfig(), "tasks"),
        (
            "task view listing everything (1,000 rows drawn)",
            TuiConfig(max_tasks=max(n_tasks * 2, 5000)),
            "tasks",
        ),
        ("shards view", TuiConfig(), "shards"),
    ):
        r = asyncio.run(_ui(endpoint, refresh, seconds, config, view))
        print(f"  {name}: {r['polls']} refreshes")
        print(f"    event-loop lag (10ms timer)    {_stats(r['lags'])}")
        if r["apply"]:
            print(f"    applying a refresh on the UI   {_stats(r['apply'])}")
        if r["keys"]:
            print(f"    key press (cursor down)        {_stats(r['keys'])}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tui.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--router", help="measure this running federation instead of starting one (no loading)")
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--tasks", type=int, default=50_000)
    p.add_argument("--load-procs", type=int, default=4)
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--refresh", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.router:
        refresh_cycles(args.router, args.cycles, args.tasks)
        ui_responsiveness(args.router, args.refresh, args.seconds, args.tasks)
        return
    with (
        tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp,
        local_federation(args.shards, Path(tmp)) as endpoint,
    ):
        print(f"fedctl up: {args.shards} shards + router at {endpoint} (SQLite in {tmp})")
        load(endpoint, args.tasks, args.load_procs)
        client = ZmqClient(endpoint, timeout=30)
        health = client.call("federation_health", {})
        client.close()
        held = sum(sum(s["counts"].values()) for s in health["shards"])
        print(
            "per shard:",
            ", ".join(f"{s['shard_id']} {sum(s['counts'].values()):,}" for s in health["shards"]),
            f"(total {held:,})",
        )
        if held < args.tasks:
            print(
                f"warning: the shards hold {held:,} of {args.tasks:,} tasks; fedctl up log:\n"
                + (Path(tmp) / "up.log").read_text()[-3000:]
            )
        refresh_cycles(endpoint, args.cycles, args.tasks)
        ui_responsiveness(endpoint, args.refresh, args.seconds, args.tasks)


if __name__ == "__main__":
    main()
