"""Real federations (router and shard processes) for scenario tests, started in milliseconds.

A scenario suite needs a fresh federation per scenario: hundreds of them, each a router and N
shard processes.  A cold Python process costs ~0.5 s of CPU to import what a shard or a router
needs, so :class:`Zygote` imports it once, in one process, and *forks* every shard and router
from there (like Android's zygote or ``multiprocessing``'s forkserver): a federation of three
shards is up in ~0.2 s (~0.2 s of CPU), and the next one starts while the current one runs
(:class:`FederationPool`).  The children are ordinary processes: a shard is
``shard.app.build_federated_shard`` + ``ShardServer.serve_forever`` (what
``fedctl shard serve --config`` runs), the router is ``router.server.serve`` (what
``fedctl router serve`` runs, HTTP gateway included), on their own 127.0.0.1 ports and SQLite
files, talking ZeroMQ to each other.

Two test seams, both only in these test processes (no production code has them):

* **The clock.**  Luigi's own tests patch ``time.time``; here every shard's scheduler reads a
  :class:`FileClock`, a float in a small file that every process maps into memory, written by
  the test before each call (``LiveFederation.set_time``).  The router reads no scheduler time
  (its own timers are monotonic: relay interval, deadlines, and a worker registry that forgets
  a worker after 4 x ``worker_disconnect_delay`` of real time, longer than any scenario lasts).
  The shards' periodic prune (luigid's 60 s ``prune``) is off: Luigi's scenarios prune
  explicitly, as its tests do.
* **Settling.**  The in-process harness (``tests/inproc_federation.py``) runs the relay to
  quiescence after every call, so what is compared is the federation's semantics, not the
  relay's lag.  Over real processes the router pulls the shards' change feeds every
  ``relay_interval`` (here 30 ms); :meth:`LiveFederation.settle` waits after every call that can
  change state, by polling each shard's ``test_relay_lag`` (added to the forked shard only),
  until every change that matters to another shard has been pulled by the router: a change of a
  task another shard mirrors, a change of a mirror (its priority rises to the owner), and a
  change of the shard's resource usage.  Everything the router sends on because of a pull
  leaves it before its next pull of that shard, and its DEALER to each shard is FIFO, so the
  next call reaches every shard after it.  With one shard nothing is relayed or waited for.
  ``FED_LIVE_SETTLE=0`` runs without it, on the production relay timer (0.25 s): every answer is
  then the one a Luigi worker gets, and a difference that shows only so is a relay lag
  (``test_federation_scenarios_http.py`` has the one found).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import http.client
import json
import mmap
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

from federation import transport
from federation.config import FederationConfig, RouterConfig, SchedulerConfig, ShardSpec
from federation.errors import FederationError
from federation.placement import Placement
from federation.transport import ZmqClient
from tests.conftest import free_port
from tests.procs import ROOT, fed_env, wait_for

#: wait for the relay after every call that can change state (``LiveFederation.settle``);
#: ``FED_LIVE_SETTLE=0`` does not: each answer is then the one a worker gets with the relay on its
#: own timer (see the module docstring)
SETTLE = os.environ.get("FED_LIVE_SETTLE", "1") != "0"
#: the router's feed-pull period: short when settling (each wait lasts until the next pull),
#: Luigi-worker timing (the production default) when not; ``FED_LIVE_RELAY_INTERVAL`` overrides
RELAY_INTERVAL = float(
    os.environ.get("FED_LIVE_RELAY_INTERVAL", 0.03 if SETTLE else RouterConfig().relay_interval)
)
#: methods that change nothing on any shard (Luigi's pure reads: no prune): no settling after them
PURE_READS = frozenset(
    {
        "count_pending",
        "fetch_error",
        "get_task_status_message",
        "get_task_progress_percentage",
        "get_running_task_resources",
        "is_paused",
        "is_pause_enabled",
        "has_task_history",
    }
)
_CLOCK = struct.Struct("d")


# --------------------------------------------------------------------------- the clock seam


class FileClock:
    """Seconds since the epoch, as the test last wrote them into ``path`` (shared memory)."""

    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "r+b")  # noqa: SIM115 - lives as long as the process
        self._map = mmap.mmap(self._file.fileno(), _CLOCK.size)

    def __call__(self) -> float:
        return float(_CLOCK.unpack_from(self._map, 0)[0])

    def set(self, now: float) -> None:
        _CLOCK.pack_into(self._map, 0, now)

    @staticmethod
    def create(path: Path, now: float) -> FileClock:
        path.write_bytes(_CLOCK.pack(now))
        return FileClock(path)


# --------------------------------------------------------------------------- the zygote (child side)


def _die_with_parent() -> None:
    """SIGTERM this process when the zygote goes away (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _run_shard(cmd: dict[str, Any]) -> None:
    from federation.config import load_federation_config
    from shard.app import build_federated_shard

    config = load_federation_config(cmd["config"])
    server = build_federated_shard(config, cmd["id"], clock=FileClock(cmd["clock"]), prune_interval=10.0**9)
    _install_relay_lag(server)
    server.install_signal_handlers()
    print(f"shard {cmd['id']} listening on {server.endpoint}", flush=True)
    Path(cmd["ready"]).touch()  # bound: polling the socket instead would wait out ZeroMQ's reconnect
    try:
        server.serve_forever()
    finally:
        server.close()
        server.store.close()


def _install_relay_lag(server: Any) -> None:
    """The settling seam: record what the router has pulled, and answer ``test_relay_lag``."""
    core = server.core
    fed_changes = core.fed_changes
    seen: dict[str, Any] = {"since": 0, "answered": None, "acked": None}

    def report(answer: dict[str, Any]) -> list[Any]:
        return [answer.get("resources_running"), answer.get("resource_pending")]

    def recording_fed_changes(since: int = 0, **kwargs: Any) -> dict[str, Any]:
        answer = fed_changes(since, **kwargs)
        # the router sends its next pull only after it handled the answer to the previous one
        seen["since"] = since
        seen["acked"] = seen["answered"]
        seen["answered"] = report(answer)
        return answer

    def test_relay_lag() -> dict[str, Any]:
        state = core.fed_state()
        unpulled = (
            [c[0] for c in fed_changes(seen["since"], limit=10**9)["changes"]]
            if seen["since"] < state["seq"]
            else []
        )
        return {
            "unpulled": unpulled,
            "mirrors": sorted(state["mirrors"]),
            "report": report(state),
            "acked": seen["acked"],
        }

    # ShardServer's table of methods: the router reaches these exactly as the real ones
    server._methods["fed_changes"] = recording_fed_changes
    server._methods["test_relay_lag"] = test_relay_lag


def _run_router(cmd: dict[str, Any]) -> None:
    import logging

    from federation.config import load_federation_config
    from router.server import serve

    logging.basicConfig(level=logging.INFO)
    serve(load_federation_config(cmd["config"]))


def _child(cmd: dict[str, Any]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    log = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    {"shard": _run_shard, "router": _run_router}[cmd["role"]](cmd)


def _warm_up() -> None:
    """Build and drop one shard in this process (no sockets: no ZeroMQ context to fork), so that
    every child starts with SQLAlchemy's and the core's first-use work already done."""
    from shard.app import build_federated_shard

    directory = Path(tempfile.mkdtemp(prefix="fed-zygote-"))
    try:
        config = FederationConfig(
            shards=(ShardSpec("s0", "tcp://127.0.0.1:1", f"sqlite:///{directory / 's0.db'}", None),),
            groups={"default": ("s0",)},
            namespaces={},
            default_group="default",
            router=RouterConfig(),
            scheduler=SchedulerConfig(),
        )
        server = build_federated_shard(config, "s0", in_process=True)
        server.core.add_task(task_id="warm", worker="w")
        server.core.get_work(worker="w")
        server.store.commit(server.core.collect_changes())
        server.store.close()
        server.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def zygote_main() -> None:
    """Import once, then fork a shard or a router per command line on stdin (JSON); reply the pid.

    Commands: ``{"role": "shard"|"router", "config", "id", "clock", "log"}`` -> ``{"pid"}``;
    ``{"stop": [pids]}`` -> SIGTERM those of our children still alive -> ``{"alive": n}``
    (children of ours not yet gone).  At end of input every child is stopped.
    """
    import luigi.scheduler  # noqa: F401 - the imports a child would pay for

    import router.http  # noqa: F401
    import router.server  # noqa: F401
    import shard.app  # noqa: F401

    _warm_up()
    # what the children inherit stays out of their garbage collections: a collection (or the
    # shard's own gc.freeze) would otherwise touch, and so copy, every inherited page
    gc.collect()
    gc.freeze()
    children: set[int] = set()

    def reap() -> None:
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    children.discard(pid)

    def reply(obj: Any) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        cmd = json.loads(line)
        reap()
        if "stop" in cmd:
            for pid in cmd["stop"]:
                if pid in children:
                    os.kill(pid, signal.SIGTERM)
            reply({"alive": len(children)})
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(cmd)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        children.add(pid)
        reply({"pid": pid})
    # end of input: the test process is done (or gone); stop every child, forcefully if it lingers
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while children and time.monotonic() < deadline:
        reap()
        time.sleep(0.05)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


class Zygote:
    """The forking server process (see the module docstring); one per test module."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.livefed import zygote_main; zygote_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=fed_env(),
            cwd=ROOT,
            text=True,
        )
        self._lock = threading.Lock()

    def _ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the zygote exited with {self.proc.wait()}")
        return dict(json.loads(line))

    def spawn(self, role: str, **kwargs: Any) -> int:
        return int(self._ask({"role": role, **kwargs})["pid"])

    def stop(self, pids: list[int]) -> int:
        """SIGTERM these children (those still alive); the number of children not yet gone."""
        return int(self._ask({"stop": pids})["alive"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# --------------------------------------------------------------------------- one federation


class CallError(Exception):
    """An error answer of the HTTP gateway: ``code`` is the federation's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class LiveFederation:
    """``shards`` shard processes and a router with its HTTP gateway, forked from ``zygote``."""

    def __init__(
        self,
        zygote: Zygote,
        shards: int,
        scheduler: SchedulerConfig | None = None,
        *,
        now: float = 1_000_000.0,
        directory: Path | None = None,
        wait: bool = True,
        relay_interval: float = RELAY_INTERVAL,
    ) -> None:
        self.zygote = zygote
        # tmpfs when there is one: the stores are throwaway, their commits need not reach a disk
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="fed-live-", dir=shm))
        self._own_dir = directory is None
        self.config = self.config_for(shards, self.dir, scheduler, relay_interval=relay_interval)
        ids = list(self.config.shard_ids)
        assert self.config.router.http is not None
        self.http_port = int(self.config.router.http.rpartition(":")[2])
        self.placement = Placement.from_config(self.config)
        config_path = self.dir / "federation.toml"
        config_path.write_text(self.config.to_toml())
        self.clock = FileClock.create(self.dir / "clock", now)
        self._now = now
        self.pids: dict[str, int] = {}
        self._http: http.client.HTTPConnection | None = None
        self._shard_clients: dict[str, ZmqClient] = {}
        self._zctx: Any = None
        self._dealers: dict[str, Any] | None = None
        self._req_id = 0
        self._config_path = config_path
        self._started: BaseException | None = None
        self._starter: threading.Thread | None = None
        try:
            for sid in ids:
                self.pids[sid] = zygote.spawn(
                    "shard",
                    config=str(config_path),
                    id=sid,
                    clock=str(self.dir / "clock"),
                    log=self.log_path(sid),
                    ready=str(self.dir / f"{sid}.ready"),
                )
        except BaseException:
            self.close()
            raise
        # the rest in the background: wait_ready() joins it (a test can start the next federation
        # while it runs its current one)
        self._starter = threading.Thread(target=self._start_router, daemon=True)
        self._starter.start()
        if wait:
            self.wait_ready()

    def _start_router(self) -> None:
        try:
            # the router after its shards are bound: it would probe a shard not yet bound again
            # only after a back-off (router.links), which costs more than this wait
            for sid in self.config.shard_ids:
                wait_for(
                    lambda sid=sid: (self.dir / f"{sid}.ready").exists(),
                    30,
                    interval=0.002,
                    what=f"shard {sid} to bind",
                )
            self.pids["router"] = self.zygote.spawn(
                "router", config=str(self._config_path), id="router", clock="", log=self.log_path("router")
            )
            wait_for(self._all_up, 30, interval=0.005, what="the router with every shard up")
        except BaseException as e:
            self._started = e

    def wait_ready(self) -> None:
        """Until the router answers over HTTP with every shard up (``wait=False`` started it)."""
        assert self._starter is not None
        self._starter.join()
        if self._started is not None:
            raise AssertionError(
                f"the federation in {self.dir} did not start: {self._started}\n{self.logs()}"
            )

    @staticmethod
    def config_for(
        shards: int,
        directory: Path,
        scheduler: SchedulerConfig | None = None,
        *,
        relay_interval: float = RELAY_INTERVAL,
    ) -> FederationConfig:
        """Shards ``s0``.. on SQLite files in ``directory``, every endpoint on a free port."""
        ids = [f"s{i}" for i in range(shards)]
        specs = tuple(
            ShardSpec(
                sid,
                f"tcp://127.0.0.1:{free_port()}",
                f"sqlite:///{directory / f'{sid}.db'}?synchronous=normal",
                None,
            )
            for sid in ids
        )
        return FederationConfig(
            shards=specs,
            groups={"default": tuple(ids)},
            namespaces={},
            default_group="default",
            router=RouterConfig(
                zmq=f"tcp://127.0.0.1:{free_port()}",
                http=f"127.0.0.1:{free_port()}",
                timeout=5.0,
                health_timeout=1.0,
                relay_interval=relay_interval,
            ),
            scheduler=scheduler or SchedulerConfig(),
        )

    def log_path(self, name: str) -> str:
        return str(self.dir / f"{name}.log")

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{Path(self.log_path(name)).read_text(errors='replace')[-4000:]}"
            for name in self.pids
            if Path(self.log_path(name)).exists()
        )

    def _all_up(self) -> bool:
        try:
            health = self.call("federation_health")
        except (OSError, CallError, http.client.HTTPException):
            self._drop_http()
            return False
        return all(s["up"] and not s["error"] for s in health["shards"])

    # -- calls ---------------------------------------------------------------------------------
    def set_time(self, now: float) -> None:
        """What every shard's scheduler reads as ``time.time()`` from now on."""
        if now != self._now:
            self.clock.set(now)
            self._now = now

    def _conn(self) -> http.client.HTTPConnection:
        if self._http is None:
            self._http = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        return self._http

    def _drop_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def call(self, method: str, **kwargs: Any) -> Any:
        """``POST /api/<method>`` with ``data=<json>``, as ``luigi.rpc.RemoteScheduler`` sends it."""
        body = urllib.parse.urlencode({"data": json.dumps(kwargs)})
        conn = self._conn()
        try:
            conn.request(
                "POST",
                f"/api/{method}",
                body=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self._drop_http()
            raise
        answer = json.loads(raw) if raw else {}
        if resp.status != 200:
            err = answer.get("error") or {}
            raise CallError(resp.status, str(err.get("code")), str(err.get("message")))
        return answer["response"]

    def shard_call(self, sid: str, method: str, **kwargs: Any) -> Any:
        """A call straight to one shard process over ZeroMQ (bypassing the router)."""
        client = self._shard_clients.get(sid)
        if client is None:
            client = self._shard_clients[sid] = ZmqClient(self.config.shard(sid).endpoint, timeout=10.0)
        return client.call(method, kwargs)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until every change that matters to another shard has been pulled by the router."""
        if len(self.config.shards) < 2 or not SETTLE:
            return
        wait_for(self._settled, timeout, interval=RELAY_INTERVAL / 2, what="the relay to catch up")

    def _ask_every_shard(self, method: str) -> dict[str, Any]:
        """``method`` of every shard process at once (one request each, then every reply)."""
        if self._dealers is None:
            import zmq

            self._zctx = zmq.Context()
            self._dealers = {
                sid: transport.connect_dealer(self._zctx, self.config.shard(sid).endpoint)
                for sid in self.config.shard_ids
            }
        self._req_id += 1
        for sock in self._dealers.values():
            sock.send_multipart(transport.request_frames(self._req_id, method, {}, {}))
        out: dict[str, Any] = {}
        for sid, sock in self._dealers.items():
            while sid not in out:
                if not sock.poll(10_000):
                    raise AssertionError(f"shard {sid} did not answer {method}\n{self.logs()}")
                reply = transport.read_reply(sock.recv_multipart())
                if reply is not None and reply.req_id == self._req_id:
                    out[sid] = transport.reply_result(reply)
        return out

    def _settled(self) -> bool:
        lags = self._ask_every_shard("test_relay_lag")
        mirrored = {task_id for lag in lags.values() for task_id in lag["mirrors"]}
        for sid, lag in lags.items():
            if lag["report"] != lag["acked"]:
                return False
            for task_id in lag["unpulled"]:
                if task_id in mirrored or self.placement.owner(task_id) != sid:
                    return False
        return True

    # -- the end ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._starter is not None:
            self._starter.join()
        self._drop_http()
        for client in self._shard_clients.values():
            client.close()
        self._shard_clients.clear()
        if self._dealers is not None:
            for sock in self._dealers.values():
                sock.close(0)
            self._dealers = None
            self._zctx.term()
        if self.pids:
            self.zygote.stop(list(self.pids.values()))
            self.pids = {}
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class FederationPool:
    """Fresh federations, one started ahead in the background while the current one is in use."""

    def __init__(self, zygote: Zygote) -> None:
        self.zygote = zygote
        self._ahead: tuple[int, SchedulerConfig | None, float, LiveFederation] | None = None

    def take(self, shards: int, scheduler: SchedulerConfig | None, now: float) -> LiveFederation:
        """A federation nobody used yet, ready."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if ahead[:3] == (shards, scheduler, now):
                ahead[3].wait_ready()
                return ahead[3]
            ahead[3].close()
        return LiveFederation(self.zygote, shards, scheduler, now=now)

    def prepare(self, shards: int, scheduler: SchedulerConfig | None, now: float) -> None:
        """Start the federation the next :meth:`take` will probably ask for."""
        if self._ahead is not None:
            self._ahead[3].close()
        self._ahead = (
            shards,
            scheduler,
            now,
            LiveFederation(self.zygote, shards, scheduler, now=now, wait=False),
        )

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[3].close()
            self._ahead = None


class LiveFederationAsCore:
    """A live federation answering Luigi's RPC methods over HTTP, for ``tests/differential.py``:
    ``Differential(cfg, make_core)`` with ``make_core = LiveFederationAsCore.factory(pool, n, made)``.

    Before each call the shards' clock is set to the differential's clock; after it, the
    federation is settled (see the module docstring).
    """

    def __init__(self, fed: LiveFederation, clock: Any) -> None:
        self._clock = clock
        self.fed = fed

    @classmethod
    def factory(
        cls,
        pool: FederationPool,
        shards: int,
        made: list[LiveFederationAsCore],
        then: tuple[int, SchedulerConfig] | None = None,
    ) -> Any:
        """``make_core(config, clock)`` for a federation of ``shards``; ``then`` is started ahead."""

        def make_core(config: SchedulerConfig | None = None, clock: Any = None) -> LiveFederationAsCore:
            core = cls(pool.take(shards, config, clock.now), clock)
            made.append(core)
            if then is not None:
                pool.prepare(then[0], then[1], clock.now)
            return core

        return make_core

    def rpc(self, method: str, **kwargs: Any) -> Any:
        self.fed.set_time(self._clock.now)
        try:
            return self.fed.call(method, **kwargs)
        except CallError as e:
            # the harness compares error *kinds*: raise what the core would have raised
            if e.code == "bad_arguments":
                raise TypeError(e.message) from None
            raise FederationError(e.message, code=e.code) from None
        finally:
            if method not in PURE_READS:
                self.fed.settle()

    def __getattr__(self, name: str) -> Any:
        import luigi.scheduler as lsched

        if name.startswith("_") or name not in lsched.RPC_METHODS:
            raise AttributeError(name)
        return lambda **kwargs: self.rpc(name, **kwargs)

    def close(self) -> None:
        self.fed.close()
