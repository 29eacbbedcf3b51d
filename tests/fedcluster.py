"""A real local federation for tests: N federated shard processes and a router process.

Everything runs as separate OS processes on 127.0.0.1 free ports, configured by one
``federation.toml`` written into the test's tmp_path, exactly as ``fedctl up`` would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from federation.config import FederationConfig, RouterConfig, SchedulerConfig, ShardSpec
from federation.transport import ZmqClient
from tests.conftest import free_port
from tests.procs import ROOT, call_ok, fed_env, wait_for

SHARD_MAIN = (
    "import sys; from fedctl.cli import main; "
    "sys.exit(main(['shard', 'serve', '--config', sys.argv[1], '--id', sys.argv[2]]))"
)
ROUTER_MAIN = (
    "import sys, logging; logging.basicConfig(level=logging.INFO); "
    "from federation.config import load_federation_config; from router.server import serve; "
    "sys.exit(serve(load_federation_config(sys.argv[1])))"
)


class FedCluster:
    """``n`` shards (SQLite in ``tmp_path`` unless ``pg_url`` and ``schemas`` are given) and a router."""

    def __init__(
        self,
        tmp_path: Path,
        n: int = 3,
        *,
        groups: dict[str, list[str]] | None = None,
        namespaces: dict[str, str] | None = None,
        default_group: str = "default",
        scheduler: SchedulerConfig | None = None,
        http: bool = False,
        timeout: float = 3.0,
        relay_interval: float = 0.1,
        pg_url: str | None = None,
        schemas: list[str] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        ids = [f"s{i}" for i in range(n)]
        shards = []
        for i, sid in enumerate(ids):
            store = pg_url if pg_url else f"sqlite:///{tmp_path / f'{sid}.db'}"
            schema = schemas[i] if schemas else None
            shards.append(ShardSpec(sid, f"tcp://127.0.0.1:{free_port()}", store, schema))
        group_map = {k: tuple(v) for k, v in (groups or {default_group: ids}).items()}
        self.http_port = free_port() if http else None
        self.config = FederationConfig(
            shards=tuple(shards),
            groups=group_map,
            namespaces=dict(namespaces or {}),
            default_group=default_group,
            router=RouterConfig(
                zmq=f"tcp://127.0.0.1:{free_port()}",
                http=f"127.0.0.1:{self.http_port}" if http else None,
                timeout=timeout,
                health_timeout=1.0,
                relay_interval=relay_interval,
            ),
            scheduler=scheduler or SchedulerConfig(),
        )
        self.config_path = tmp_path / "federation.toml"
        self.config_path.write_text(self.config.to_toml())
        self.shards: dict[str, subprocess.Popen[bytes]] = {}
        self.router: subprocess.Popen[bytes] | None = None
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self._clients: list[ZmqClient] = []

    # -- processes ------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.config.router.zmq

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _spawn(self, name: str, code: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], env=fed_env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def start_shard(self, sid: str, wait: bool = True) -> None:
        self.shards[sid] = self._spawn(sid, SHARD_MAIN, str(self.config_path), sid)
        if wait:
            endpoint = self.config.shard(sid).endpoint
            wait_for(
                lambda: self.shards[sid].poll() is not None or call_ok(endpoint, "shard_info"),
                30,
                what=f"shard {sid}",
            )
            assert self.shards[sid].poll() is None, self.log(sid)

    def start_router(self) -> None:
        self.router = self._spawn("router", ROUTER_MAIN, str(self.config_path))
        wait_for(
            lambda: self.router.poll() is not None or call_ok(self.endpoint, "federation_health"),
            30,
            what="router",
        )
        assert self.router.poll() is None, self.log("router")

    def start(self) -> FedCluster:
        for sid in self.config.shard_ids:
            self.start_shard(sid, wait=False)
        for sid in self.config.shard_ids:
            endpoint = self.config.shard(sid).endpoint
            wait_for(
                lambda sid=sid, endpoint=endpoint: (
                    self.shards[sid].poll() is not None or call_ok(endpoint, "shard_info")
                ),
                30,
                what=f"shard {sid}",
            )
            assert self.shards[sid].poll() is None, self.log(sid)
        self.start_router()
        self.wait_all_up()
        return self

    def wait_all_up(self, timeout: float = 30.0) -> dict[str, Any]:
        def all_up() -> Any:
            h = call_ok(self.endpoint, "federation_health")
            return h if h and all(s["up"] for s in h["shards"]) else None

        return wait_for(all_up, timeout, what="every shard up in federation_health")

    def kill_shard(self, sid: str) -> None:
        proc = self.shards.pop(sid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def kill_router(self) -> None:
        assert self.router is not None
        self.router.send_signal(signal.SIGKILL)
        self.router.wait(10)
        self.router = None

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        procs = [p for p in [self.router, *self.shards.values()] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    # -- calls ----------------------------------------------------------------------------------
    def client(self, timeout: float = 10.0) -> ZmqClient:
        c = ZmqClient(self.endpoint, timeout=timeout)
        self._clients.append(c)
        return c

    def shard_client(self, sid: str, timeout: float = 5.0) -> ZmqClient:
        c = ZmqClient(self.config.shard(sid).endpoint, timeout=timeout)
        self._clients.append(c)
        return c

    def call(self, method: str, timeout: float = 10.0, **kwargs: Any) -> Any:
        return self.client(timeout).call(method, kwargs)

    def health(self) -> dict[str, Any]:
        return self.call("federation_health")
