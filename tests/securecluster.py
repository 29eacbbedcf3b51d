"""A secured local federation for tests: :class:`tests.fedcluster.FedCluster` with ``[security]``.

Keys and tokens come from :func:`fedctl.secure.provision` (what ``fedctl up --secure`` uses);
every process is the real one, every link CURVE, every client holds a key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from federation.auth import ADMIN, OPERATOR, VIEWER, WORKER
from federation.config import FederationConfig
from federation.credentials import Provisioned, provision
from federation.errors import FederationError
from federation.keys import ClientCurve
from federation.secconfig import parse_security
from federation.transport import ZmqClient
from tests.fedcluster import FedCluster
from tests.procs import wait_for

PRINCIPALS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("admin", ADMIN, ("*",)),
    ("worker", WORKER, ("*",)),
    ("viewer", VIEWER, ("*",)),
    ("fin-worker", WORKER, ("fin.*",)),
    ("fin-operator", OPERATOR, ("fin.*",)),
    ("mkt-worker", WORKER, ("mkt.*",)),
    ("fin-viewer", VIEWER, ("fin.*",)),
)


def secure(config: FederationConfig, creds: Provisioned) -> FederationConfig:
    problems: list[str] = []
    sec = parse_security(creds.security, creds.principals, problems, None)
    assert not problems and sec is not None, problems
    return config.replace(security=sec)


class SecureCluster(FedCluster):
    def __init__(self, tmp_path: Path, n: int = 3, **kwargs: Any) -> None:
        super().__init__(tmp_path, n, **kwargs)
        self.creds = provision(tmp_path, PRINCIPALS)
        self.config = secure(self.config, self.creds)
        self.config_path.write_text(self.config.to_toml())

    # -- clients --------------------------------------------------------------------------------
    def curve(self, principal: str, server: str = "router") -> ClientCurve:
        return ClientCurve.from_files(self.creds.key(principal), self.creds.public(server))

    def client_as(self, principal: str, timeout: float = 10.0) -> ZmqClient:
        c = ZmqClient(self.endpoint, timeout=timeout, curve=self.curve(principal))
        self._clients.append(c)
        return c

    def client(self, timeout: float = 10.0) -> ZmqClient:
        return self.client_as("admin", timeout)

    def shard_client(self, sid: str, timeout: float = 5.0, principal: str = "admin") -> ZmqClient:
        c = ZmqClient(self.config.shard(sid).endpoint, timeout=timeout, curve=self.curve(principal, "shard"))
        self._clients.append(c)
        return c

    def _answers(self, client_factory: Any, method: str) -> Any:
        c = client_factory()
        try:
            return c.call(method, {})
        except FederationError:
            return None
        finally:
            c.close()

    # -- processes ------------------------------------------------------------------------------
    def start(self) -> SecureCluster:
        for sid in self.config.shard_ids:
            self.start_shard(sid, wait=False)
        for sid in self.config.shard_ids:
            wait_for(
                lambda sid=sid: (
                    self.shards[sid].poll() is not None
                    or self._answers(
                        lambda: ZmqClient(
                            self.config.shard(sid).endpoint, timeout=0.5, curve=self.curve("admin", "shard")
                        ),
                        "shard_info",
                    )
                ),
                30,
                what=f"shard {sid}",
            )
            assert self.shards[sid].poll() is None, self.log(sid)
        self.router = self._spawn("router", _ROUTER_MAIN, str(self.config_path))
        self.wait_all_up()
        return self

    def wait_all_up(self, timeout: float = 30.0) -> dict[str, Any]:
        def all_up() -> Any:
            assert self.router is None or self.router.poll() is None, self.log("router")
            h = self._answers(
                lambda: ZmqClient(self.endpoint, timeout=0.5, curve=self.curve("admin")), "federation_health"
            )
            return h if h and all(s["up"] for s in h["shards"]) else None

        return wait_for(all_up, timeout, what="every shard up in federation_health")

    def all_tasks(self) -> dict[str, Any]:
        """Every shard's task_list, asked of each shard directly with the admin key."""
        out: dict[str, Any] = {}
        for sid in self.config.shard_ids:
            c = self.shard_client(sid)
            for status in ("PENDING", "RUNNING", "DONE", "FAILED", "DISABLED"):
                out[f"{sid}/{status}"] = c.call("task_list", {"status": status, "upstream_status": ""})
        return out


_ROUTER_MAIN = (
    "import sys, logging; logging.basicConfig(level=logging.INFO); "
    "from federation.config import load_federation_config; from router.server import serve; "
    "sys.exit(serve(load_federation_config(sys.argv[1])))"
)
