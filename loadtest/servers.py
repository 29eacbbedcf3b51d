"""The federations a load test runs against: one it starts itself, or one already running.

:class:`LocalFederation` runs ``fedctl up --config <generated federation.toml>`` as a child
process: N shards on free ports (SQLite files in a temp dir, or Postgres schemas
``lt_<hex>_s<i>`` dropped afterwards), a router with its HTTP gateway, Luigi's ``[scheduler]``
settings of the run (a short ``retry_delay``) and ``[resources]``.  :class:`RemoteFederation` is a
router given by address; its processes are found by the TCP ports they listen on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from federation.config import (
    FederationConfig,
    RouterConfig,
    SchedulerConfig,
    ShardSpec,
    load_federation_config,
)
from federation.errors import FederationError
from federation.placement import Placement
from federation.transport import ZmqClient
from loadtest import procstats

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port(endpoint: str) -> int | None:
    tail = endpoint.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


class _Federation:
    name = "federation"
    zmq: str
    http: str | None
    placement: Placement
    placement_note: str = ""

    def endpoint(self, via: str) -> str:
        if via == "zmq":
            return self.zmq
        if via == "http":
            if not self.http:
                raise ValueError("this federation has no HTTP gateway ([router] http)")
            return f"http://{self.http}"
        raise ValueError(f"unknown transport {via!r} (zmq or http)")

    def call(self, method: str, kwargs: dict[str, Any], timeout: float = 120.0) -> Any:
        from federation.credentials import env_curve

        # a running secured federation (--router): the key of FED_KEY, as the drivers use it
        client = ZmqClient(self.zmq, timeout=timeout, meta={"client": "loadtest"}, curve=env_curve())
        try:
            return client.call(method, kwargs)
        finally:
            client.close()

    def health(self) -> dict[str, Any]:
        return self.call("federation_health", {}, timeout=10.0)


class LocalFederation(_Federation):
    """``fedctl up`` on a generated ``federation.toml``, stopped (and its schemas dropped) by :meth:`stop`."""

    def __init__(
        self,
        shards: int,
        *,
        store: str = "sqlite",
        pg_url: str = DEFAULT_PG_URL,
        scheduler: SchedulerConfig | None = None,
        http: bool = True,
        workdir: Path | None = None,
        keep: bool = False,
        standbys: int = 0,
        session_timeout: float | None = None,
        router_timeout: float = 30.0,
        secure: bool = False,
    ) -> None:
        if shards < 1:
            raise ValueError("--shards must be at least 1")
        if store not in ("sqlite", "postgres"):
            raise ValueError(f"unknown store {store!r} (sqlite or postgres)")
        if standbys and store != "postgres":
            raise ValueError("standbys need --store postgres (an SQLite shard is restarted in place)")
        self.n, self.store, self.pg_url = shards, store, pg_url
        self.own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="loadtest-fed-"))
        self.keep = keep
        self.prefix = f"lt_{uuid.uuid4().hex[:8]}_"
        specs = []
        for i in range(shards):
            sid = f"s{i}"
            if store == "sqlite":
                specs.append(
                    ShardSpec(
                        sid, f"tcp://127.0.0.1:{free_port()}", f"sqlite:///{self.workdir / f'{sid}.db'}"
                    )
                )
            else:
                # standbys (the chaos test): processes waiting to take the shard over, on their own ports
                extra = tuple(f"tcp://127.0.0.1:{free_port()}" for _ in range(standbys))
                specs.append(
                    ShardSpec(
                        sid,
                        f"tcp://127.0.0.1:{free_port()}",
                        pg_url,
                        f"{self.prefix}{sid}",
                        extra,
                        session_timeout if extra else None,
                    )
                )
        self.http = f"127.0.0.1:{free_port()}" if http else None
        self.zmq = f"tcp://127.0.0.1:{free_port()}"
        # a generous shard timeout: under a load test on 2 cores a busy shard is slow, not dead
        self.config = FederationConfig(
            shards=tuple(specs),
            groups={"default": tuple(s.id for s in specs)},
            router=RouterConfig(zmq=self.zmq, http=self.http, timeout=router_timeout, health_timeout=10.0),
            scheduler=scheduler or SchedulerConfig(),
        )
        #: secure: CURVE and tokens (keys under workdir/keys); the drivers get the worker's credentials
        #: through FED_KEY/FED_SERVER_KEY/FED_TOKEN, set by :meth:`start`
        self.secure = secure
        self.creds: Any = None
        if secure:
            from federation.credentials import provision, security_config

            self.creds = provision(self.workdir)
            self.config = self.config.replace(security=security_config(self.creds))
        self.placement = Placement.from_config(self.config)
        self.config_path = self.workdir / "federation.toml"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def schemas(self) -> list[str]:
        return [s.schema for s in self.config.shards if s.schema]

    def _curve(self) -> Any:
        if self.creds is None:
            return None
        from federation.keys import ClientCurve

        return ClientCurve.from_files(self.creds.key("admin"), self.creds.public("router"))

    def call(self, method: str, kwargs: dict[str, Any], timeout: float = 120.0) -> Any:
        client = ZmqClient(self.zmq, timeout=timeout, meta={"client": "loadtest"}, curve=self._curve())
        try:
            return client.call(method, kwargs)
        finally:
            client.close()

    def start(self, timeout: float = 90.0) -> LocalFederation:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.creds is not None:
            from federation.credentials import client_env

            self._saved_env = {k: os.environ.get(k) for k in ("FED_KEY", "FED_SERVER_KEY", "FED_TOKEN")}
            os.environ.update(client_env(self.creds, "worker"))
        self.config_path.write_text(self.config.to_toml())
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.log_path = self.workdir / "up.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedctl",
                "up",
                "--config",
                str(self.config_path),
                "--data-dir",
                str(self.workdir),
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fedctl up exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                client = ZmqClient(self.zmq, timeout=1.0, curve=self._curve())
                try:
                    h = client.call("federation_health", {})
                finally:
                    client.close()
                if all(s["up"] for s in h["shards"]) and len(h["shards"]) == self.n:
                    break
            except FederationError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the federation did not come up within {timeout:g} s: {self.log_tail()}")
            time.sleep(0.2)
        return self

    def log_tail(self) -> str:
        path = getattr(self, "log_path", None)
        return path.read_text(errors="replace")[-2000:] if path and path.exists() else ""

    def roles(self) -> dict[str, list[int]]:
        """Server processes by role: ``router`` and ``shards`` (children of ``fedctl up``), ``postgres``."""
        out: dict[str, list[int]] = {"router": [], "shards": []}
        if self.proc is not None:
            for pid in procstats.children(self.proc.pid):
                args = procstats.cmdline(pid)
                command = args[args.index("fedctl") + 1] if "fedctl" in args[:-1] else ""
                if command == "router":
                    out["router"].append(pid)
                elif command == "shard":
                    out["shards"].append(pid)
        if self.store == "postgres":
            out["postgres"] = procstats.pids_named("postgres")
        return out

    def stop(self) -> None:
        for name, value in getattr(self, "_saved_env", {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.store == "postgres" and not self.keep:
            drop_schemas(self.pg_url, self.schemas)
        if self.own_dir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def drop_schemas(pg_url: str, schemas: list[str]) -> None:
    import sqlalchemy as sa

    eng = sa.create_engine(pg_url)
    try:
        with eng.begin() as conn:
            for schema in schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        eng.dispose()


class RemoteFederation(_Federation):
    """A running federation, by its router's ZeroMQ address (``--router``)."""

    def __init__(self, router: str, config_path: str | None = None) -> None:
        self.zmq = router
        health = self.health()
        self.http = health["router"].get("http")
        if config_path:
            self.placement = Placement.from_config(load_federation_config(config_path))
        else:
            # namespace pins are not in federation_health; without --config the default group decides
            self.placement = Placement(health["groups"], {}, health["default_group"])
            self.placement_note = "placement from federation_health (namespace pins unknown without --config)"
        self._endpoints = {s["shard_id"]: s["endpoint"] for s in health["shards"]}

    def roles(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {"router": [], "shards": []}
        port = _port(self.zmq)
        if port:
            out["router"] = procstats.listening_pids(port)
        for ep in self._endpoints.values():
            p = _port(ep)
            if p:
                out["shards"].extend(procstats.listening_pids(p))
        return out

    def start(self) -> RemoteFederation:
        return self

    def stop(self) -> None:
        pass
