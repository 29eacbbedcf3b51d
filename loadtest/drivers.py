"""Many Luigi workers, simulated in processes, speaking the protocol Luigi's worker speaks.

Each simulated worker does what ``luigi.worker.Worker`` does against a remote scheduler:

1. ``add_task`` for each of its tasks, with all of Luigi's arguments (:func:`loadtest.dag.registration_kwargs`),
   downstream before upstream like Luigi's LIFO walk, then ``add_worker`` with Luigi's info list;
2. the run loop of ``Worker.run``: while its slots are full, wait for a running task to finish and
   report it (``add_task`` DONE or FAILED, with ``new_deps=[]`` and ``expl``); otherwise
   ``get_work(worker, host, assistant=False, current_tasks=<running ids>)``; no task and nothing
   running → keep alive while ``n_pending_tasks`` > 0 (``[worker] keep_alive = true``), sleeping
   ``wait_interval`` + jitter, else stop;
3. a keep-alive thread that ``ping``s every ``ping_interval`` on its own connection.

Two transports (:class:`ZmqChannel`: msgpack over a DEALER, the federation's native protocol;
:class:`HttpChannel`: Luigi's own HTTP RPC, ``POST /api/<method>`` with ``data=<json>``, to
the federation's gateway or a stock ``luigid``) and two shapes: many worker ids, one process
each (``slots=1``, Luigi's default), or one worker id with N slots (``luigi --workers N``: Luigi
runs tasks in N child processes, but every scheduler call of that worker comes from its main
process, one at a time, which is what the single driver process reproduces; tasks "run" for
``task_ms`` on a timer).

Every call is timed with ``time.perf_counter`` (CLOCK_MONOTONIC, one clock for all processes on
the host) and every grant and report is recorded, for :mod:`loadtest.checks`.
"""

from __future__ import annotations

import base64
import getpass
import heapq
import http.client
import json
import multiprocessing as mp
import os
import random
import socket
import threading
import time
import traceback
import urllib.parse
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from federation.errors import FederationError, TransportError
from federation.transport import ZmqClient
from loadtest.checks import REPORT_DONE, REPORT_FAILED
from loadtest.dag import Dag, registration_kwargs, report_kwargs


class ChannelError(Exception):
    """A call that failed after its retries (transport error, HTTP error, server error)."""


class Channel(Protocol):
    def call(self, method: str, kwargs: dict[str, Any]) -> Any: ...

    def close(self) -> None: ...


class ZmqChannel:
    """The federation's native protocol: :class:`federation.transport.ZmqClient`."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        from federation.credentials import env_curve

        # a secured federation: the key of FED_KEY (loadtest run --secure sets it)
        self.client = ZmqClient(endpoint, timeout=timeout, meta={"client": "loadtest"}, curve=env_curve())

    def call(self, method: str, kwargs: dict[str, Any]) -> Any:
        try:
            return self.client.call(method, kwargs)
        except TransportError as e:  # unavailable, timeout: Luigi's client retries these
            raise ChannelError(f"{method}: {e}") from e
        except FederationError as e:
            raise ChannelError(f"{method}: server error {e.code}: {e.message}") from e

    def close(self) -> None:
        self.client.close()


class HttpChannel:
    """Luigi's HTTP RPC (``luigi.rpc.RemoteScheduler``): POST ``/api/<method>``, form field ``data``.

    One keep-alive connection, as Luigi's ``RequestsFetcher`` keeps a ``requests.Session``.
    """

    def __init__(self, url: str, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"not an http:// URL: {url!r}")
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.base = parsed.path.rstrip("/")
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        # a secured federation: the token of FED_TOKEN as Luigi sends it, HTTP Basic (loadtest run --secure)
        token = os.environ.get("FED_TOKEN")
        self.auth = "Basic " + base64.b64encode(f"worker:{token}".encode()).decode() if token else None

    def call(self, method: str, kwargs: dict[str, Any]) -> Any:
        body = urllib.parse.urlencode({"data": json.dumps(kwargs)})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.auth:
            headers["Authorization"] = self.auth
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request("POST", f"{self.base}/api/{method}", body=body, headers=headers)
            resp = self.conn.getresponse()
            text = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise ChannelError(f"{method}: {type(e).__name__}: {e}") from e
        if resp.status != 200:
            raise ChannelError(f"{method}: HTTP {resp.status}: {text[:200]!r}")
        try:
            return json.loads(text)["response"]
        except (ValueError, KeyError, TypeError) as e:
            raise ChannelError(f"{method}: not Luigi's envelope: {text[:200]!r}") from e

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def make_channel(endpoint: str, timeout: float) -> Channel:
    """A channel for ``tcp://...`` (ZeroMQ) or ``http://...`` (Luigi's HTTP RPC)."""
    if endpoint.startswith("http://"):
        return HttpChannel(endpoint, timeout)
    return ZmqChannel(endpoint, timeout)


def call_retrying(
    ch: Channel, method: str, kwargs: dict[str, Any], attempts: int, wait: float, counters: dict[str, int]
) -> Any:
    """Luigi's client policy: retry transport/server errors, up to ``attempts`` calls in all.

    The waits double from ``wait`` up to ``MAX_RETRY_WAIT``: the defaults (8 calls from 0.5 s)
    wait ~31 s in all, so a shard or router restart, a Postgres restart or a frozen process —
    the faults the load test injects — is outlasted as Luigi's own client outlasts it
    (3 attempts, 30 s apart), only with shorter first waits.
    """
    delay = wait
    for attempt in range(attempts):
        try:
            return ch.call(method, kwargs)
        except ChannelError:
            counters["retries"] = counters.get("retries", 0) + 1
            if attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_WAIT)
    raise AssertionError("unreachable")


#: the longest wait between two attempts of one call
MAX_RETRY_WAIT = 8.0


# -- one worker ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriverConfig:
    """How the simulated workers behave."""

    endpoint: str  # tcp://... (ZeroMQ) or http://host:port (Luigi HTTP)
    task_ms: float = 0.0  # simulated run time of each task
    wait_interval: float = 0.05  # Luigi's [worker] wait_interval (1 s by default; short here)
    wait_jitter: float = 0.05  # Luigi's [worker] wait_jitter (5 s by default)
    ping_interval: float = 1.0  # Luigi's [worker] ping_interval
    timeout: float = 60.0  # per call (Luigi: rpc-connect-timeout 10 s)
    attempts: int = 8  # calls in all (Luigi: rpc-retry-attempts 3, rpc-retry-wait 30 s)
    retry_wait: float = 0.5  # the first wait; doubled up to MAX_RETRY_WAIT (see call_retrying)


@dataclass
class WorkerPlan:
    wid: int
    worker_id: str
    slots: int
    tasks: list[int]  # in registration order


@dataclass
class WorkerResult:
    """Everything one simulated worker saw (arrays of floats are perf_counter seconds)."""

    wid: int
    worker_id: str
    registered: int = 0
    reg_t0: float = 0.0
    reg_t1: float = 0.0
    reg_lat: array = field(default_factory=lambda: array("d"))
    run_t0: float = 0.0
    run_t1: float = 0.0
    gw_lat: array = field(default_factory=lambda: array("d"))
    grant_idx: array = field(default_factory=lambda: array("q"))
    grant_t0: array = field(default_factory=lambda: array("d"))
    grant_t1: array = field(default_factory=lambda: array("d"))
    rep_idx: array = field(default_factory=lambda: array("q"))
    rep_status: array = field(default_factory=lambda: array("b"))
    rep_t0: array = field(default_factory=lambda: array("d"))
    rep_t1: array = field(default_factory=lambda: array("d"))
    foreign: list[str] = field(default_factory=list)  # granted ids that are not in the DAG
    batches: int = 0  # get_work answers with a batch_id (no batchable tasks are generated)
    pings: int = 0
    ping_errors: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    stopped: bool = False  # told to stop before it finished (stall, deadline)
    error: str | None = None
    cpu_reg: float = 0.0  # CPU seconds of this process (all threads) while registering
    cpu_run: float = 0.0  # ... and while running


def worker_info(plan: WorkerPlan, first_task: str | None) -> list[list[Any]]:
    """``add_worker``'s info as Luigi's Worker builds it (salt, workers, host, username, pid, first_task)."""
    return [
        ["salt", plan.worker_id.split("salt=")[-1].split(",")[0]],
        ["workers", plan.slots],
        ["host", socket.gethostname()],
        ["username", _user()],
        ["pid", os.getpid()],
        ["first_task", first_task],
    ]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def luigi_worker_id(n: int, slots: int, salt: str) -> str:
    """A worker id in Luigi's default format (``Worker(salt=..., workers=..., host=..., ...)``)."""
    return (
        f"Worker(salt={salt}{n:05d}, workers={slots}, host={socket.gethostname()}, "
        f"username={_user()}, pid={os.getpid()}-{n})"
    )


class _Pinger(threading.Thread):
    """Luigi's KeepAliveThread: ``ping(worker)`` every ``interval`` on its own connection."""

    def __init__(self, cfg: DriverConfig, worker_id: str, result: WorkerResult) -> None:
        super().__init__(daemon=True, name="loadtest-ping")
        self.cfg, self.worker_id, self.result = cfg, worker_id, result
        self.stopped = threading.Event()

    def run(self) -> None:
        ch = make_channel(self.cfg.endpoint, self.cfg.timeout)
        try:
            while not self.stopped.wait(self.cfg.ping_interval):
                try:
                    ch.call("ping", {"worker": self.worker_id})
                    self.result.pings += 1
                except ChannelError:
                    self.result.ping_errors += 1  # Luigi only logs a failed ping
        finally:
            ch.close()


@dataclass
class Sync:
    """Shared between the parent and the worker processes."""

    go_register: Any
    go_run: Any
    stop: Any
    registered: Any  # RawArray('q'): add_task calls done, per worker
    reg_done: Any  # RawArray('b'): registration finished, per worker
    done: Any  # RawArray('q'): DONE reports, per worker
    out: Any  # Queue of WorkerResult


def run_worker(dag: Dag, plan: WorkerPlan, cfg: DriverConfig, sync: Sync) -> WorkerResult:
    """One simulated Luigi worker: register, wait for the start signal, run until nothing is left."""
    res = WorkerResult(plan.wid, plan.worker_id)
    ch = make_channel(cfg.endpoint, cfg.timeout)
    counters = res.counters
    ids = dag.ids
    index = dag.index
    wid = plan.wid

    def call(method: str, kwargs: dict[str, Any]) -> Any:
        counters[method] = counters.get(method, 0) + 1
        return call_retrying(ch, method, kwargs, cfg.attempts, cfg.retry_wait, counters)

    try:
        sync.go_register.wait()
        cpu0 = time.process_time()
        res.reg_t0 = time.perf_counter()
        for n, i in enumerate(plan.tasks):
            if sync.stop.is_set():
                res.stopped = True
                return res
            kwargs = registration_kwargs(dag, i, plan.worker_id)
            t0 = time.perf_counter()
            call("add_task", kwargs)
            res.reg_lat.append(time.perf_counter() - t0)
            sync.registered[wid] = n + 1
        call(
            "add_worker",
            {"worker": plan.worker_id, "info": worker_info(plan, ids[plan.tasks[0]] if plan.tasks else None)},
        )
        res.registered = len(plan.tasks)
        res.reg_t1 = time.perf_counter()
        res.cpu_reg = time.process_time() - cpu0
        sync.reg_done[wid] = 1
        while not sync.go_run.wait(0.2):
            if sync.stop.is_set():
                res.stopped = True
                return res
        cpu1 = time.process_time()
        pinger = _Pinger(cfg, plan.worker_id, res)
        pinger.start()
        try:
            _run_loop(dag, plan, cfg, sync, res, call, index)
        finally:
            pinger.stopped.set()
            pinger.join(cfg.timeout + 1)
            res.cpu_run = time.process_time() - cpu1
    except ChannelError as e:
        res.error = f"{plan.worker_id}: {e}"
    finally:
        res.run_t1 = res.run_t1 or time.perf_counter()
        ch.close()
    return res


def _run_loop(
    dag: Dag,
    plan: WorkerPlan,
    cfg: DriverConfig,
    sync: Sync,
    res: WorkerResult,
    call: Callable[[str, dict[str, Any]], Any],
    index: dict[str, int],
) -> None:
    ids = dag.ids
    fail = dag.fail
    attempts: dict[int, int] = {}
    running: list[tuple[float, int]] = []  # heap of (finish time, task index)
    task_s = cfg.task_ms / 1000.0
    host = socket.gethostname()
    rng = random.Random(plan.wid)
    done_count = 0

    def report_next() -> None:
        nonlocal done_count
        finish, i = heapq.heappop(running)
        delay = finish - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        # FAIL_ONCE fails its first attempt; FAIL_ALWAYS (retry_count 1) fails and is disabled
        failed = fail[i] == 2 or (fail[i] == 1 and attempts[i] == 1)
        status = "FAILED" if failed else "DONE"
        t0 = time.perf_counter()
        call("add_task", report_kwargs(dag, i, plan.worker_id, status))
        t1 = time.perf_counter()
        res.rep_idx.append(i)
        res.rep_status.append(REPORT_FAILED if failed else REPORT_DONE)
        res.rep_t0.append(t0)
        res.rep_t1.append(t1)
        if not failed:
            done_count += 1
            sync.done[plan.wid] = done_count

    res.run_t0 = time.perf_counter()
    while not sync.stop.is_set():
        while len(running) >= plan.slots:
            report_next()
        t0 = time.perf_counter()
        reply = call(
            "get_work",
            {
                "worker": plan.worker_id,
                "host": host,
                "assistant": False,
                "current_tasks": [ids[i] for _, i in running],
            },
        )
        t1 = time.perf_counter()
        res.gw_lat.append(t1 - t0)
        reply = reply or {}
        tid = reply.get("task_id")
        if tid is None:
            if reply.get("batch_id") is not None:
                res.batches += 1
            if reply.get("worker_state") == "disabled":
                break
            if running:
                report_next()
                continue
            if not reply.get("n_pending_tasks"):
                break  # Worker._keep_alive: nothing pending for this worker any more
            sync.stop.wait(cfg.wait_interval + rng.uniform(0, cfg.wait_jitter))
            continue
        i = index.get(tid)
        if i is None:
            res.foreign.append(str(tid))
            continue
        res.grant_idx.append(i)
        res.grant_t0.append(t0)
        res.grant_t1.append(t1)
        attempts[i] = attempts.get(i, 0) + 1
        heapq.heappush(running, (time.perf_counter() + task_s, i))
    while running and not sync.stop.is_set():
        report_next()
    res.stopped = sync.stop.is_set()
    res.run_t1 = time.perf_counter()


def _worker_main(dag: Dag, plan: WorkerPlan, cfg: DriverConfig, sync: Sync) -> None:
    try:
        res = run_worker(dag, plan, cfg, sync)
    except BaseException:
        res = WorkerResult(plan.wid, plan.worker_id, error=traceback.format_exc())
    sync.out.put(res)


# -- many workers ------------------------------------------------------------------------------------
def plan_workers(dag: Dag, shape: str, workers: int, salt: str | None = None) -> list[WorkerPlan]:
    """``many``: ``workers`` worker ids, one slot each, each owning its share of the DAG;
    ``one``: one worker id owning the whole DAG with ``workers`` slots."""
    salt = salt or f"{random.randrange(10**9):09d}"
    if shape == "one":
        return [
            WorkerPlan(
                0, luigi_worker_id(0, workers, salt), workers, dag.registration_order(list(range(len(dag))))
            )
        ]
    if shape != "many":
        raise ValueError(f"unknown shape {shape!r} (many or one)")
    owners = dag.owners(workers)
    owned: list[list[int]] = [[] for _ in range(workers)]
    for i, w in enumerate(owners):
        owned[w].append(i)
    return [
        WorkerPlan(w, luigi_worker_id(w, 1, salt), 1, dag.registration_order(owned[w]))
        for w in range(workers)
    ]


class Driver:
    """The simulated workers as forked processes, phase by phase.

    ``start()`` forks them (they wait), ``register()`` lets them register and waits until all
    have, ``run()`` starts the run loops together and waits for every result.  ``tick`` callbacks
    get ``(done_so_far)`` a few times a second; a run that makes no progress for
    ``stall_timeout`` seconds, or passes ``deadline``, is stopped (the workers report what they did).
    """

    def __init__(self, dag: Dag, plans: list[WorkerPlan], cfg: DriverConfig) -> None:
        self.dag, self.plans, self.cfg = dag, plans, cfg
        ctx = mp.get_context("fork")  # the children share the parent's DAG instead of rebuilding it
        n = len(plans)
        self.sync = Sync(
            go_register=ctx.Event(),
            go_run=ctx.Event(),
            stop=ctx.Event(),
            registered=ctx.RawArray("q", n),
            reg_done=ctx.RawArray("b", n),
            done=ctx.RawArray("q", n),
            out=ctx.Queue(),
        )
        self.procs = [
            ctx.Process(
                target=_worker_main, args=(dag, p, cfg, self.sync), name=f"loadtest-w{p.wid}", daemon=True
            )
            for p in plans
        ]
        self.results: dict[int, WorkerResult] = {}
        self.stall: str | None = None
        self.registration_calls = sum(len(p.tasks) for p in plans)

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def registered(self) -> int:
        return sum(self.sync.registered)

    def done(self) -> int:
        return sum(self.sync.done)

    def _collect(self, timeout: float) -> None:
        try:
            res: WorkerResult = self.sync.out.get(timeout=timeout)
        except Exception:  # queue.Empty
            return
        self.results[res.wid] = res

    def register(self, tick: Callable[[int], None] | None = None, deadline: float | None = None) -> bool:
        """Let every worker register; True when all did (False: stopped, see ``stall``)."""
        self.sync.go_register.set()
        last, last_change = -1, time.monotonic()
        while not self._all_registered():
            self._collect(0.2)
            if self.results:  # a worker that reports before the run phase has failed
                first = next(iter(self.results.values()))
                self.stall = f"a worker failed while registering: {first.error or 'stopped'}"
                return False
            n = self.registered()
            if tick:
                tick(n)
            now = time.monotonic()
            if n != last:
                last, last_change = n, now
            elif now - last_change > self.cfg.timeout * self.cfg.attempts + 30:
                self.stall = f"registration made no progress for {now - last_change:.0f} s"
                return False
            if deadline is not None and now > deadline:
                self.stall = "deadline reached while registering"
                return False
        return True

    def _all_registered(self) -> bool:
        return all(self.sync.reg_done[p.wid] for p in self.plans)

    def run(
        self,
        tick: Callable[[int], None] | None = None,
        stall_timeout: float = 120.0,
        deadline: float | None = None,
        expected_done: int | None = None,
        settle: float = 10.0,
    ) -> None:
        """Start the run loops and wait for every worker's result.

        When ``expected_done`` tasks are DONE and workers still keep polling for ``settle``
        seconds, the scheduler is telling them something is still pending that can never run
        (Luigi's worker would wait forever): that is reported as a stall at once.
        """
        self.sync.go_run.set()
        last, last_change = -1, time.monotonic()
        while len(self.results) < len(self.procs):
            self._collect(0.2)
            n = self.done()
            if tick:
                tick(n)
            now = time.monotonic()
            if n != last:
                last, last_change = n, now
            elif (
                expected_done is not None
                and n >= expected_done
                and now - last_change > settle
                and not self.sync.stop.is_set()
            ):
                waiting = len(self.procs) - len(self.results)
                self.stall = (
                    f"all {n} tasks that can run are DONE, but {waiting} worker(s) still saw "
                    f"n_pending_tasks > 0 after {settle:.0f} s (Luigi's worker would keep polling forever)"
                )
                self.sync.stop.set()
            elif now - last_change > stall_timeout and not self.sync.stop.is_set():
                self.stall = f"no task completed for {stall_timeout:.0f} s"
                self.sync.stop.set()
            if deadline is not None and now > deadline and not self.sync.stop.is_set():
                self.stall = "deadline reached"
                self.sync.stop.set()
            if (
                self.sync.stop.is_set()
                and now - last_change > stall_timeout + self.cfg.timeout * self.cfg.attempts + 10
            ):
                break  # a worker that does not come back is reported missing
        self.close()

    def abort(self) -> None:
        self.sync.stop.set()
        self.sync.go_register.set()
        self.sync.go_run.set()

    def close(self) -> None:
        self.sync.stop.set()
        for p in self.procs:
            p.join(timeout=5)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for plan in self.plans:
            if plan.wid not in self.results:
                self.results[plan.wid] = WorkerResult(
                    plan.wid, plan.worker_id, error="worker process did not report"
                )
