"""A federation of in-process shards wearing the scheduler core's interface.

``FederationAsCore(config, clock)`` builds N federated shards (``ShardServer`` with
``bind=None`` on SQLite files in a temporary directory) and a router
(``router.core.InProcRouter``), and answers every Luigi RPC method by sending it through the
router as a client would: the differential harness (``tests/differential.py``) then compares
the *federation* with ``luigi.scheduler.Scheduler``, call by call.

After every call the router's clock is moved past ``relay_interval`` and the federation settled,
so every status change has reached every mirror before the next call: what is measured is the
federation's semantics, not the relay's lag.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import luigi.scheduler as lsched

from federation.config import FederationConfig, RouterConfig, SchedulerConfig, ShardSpec
from federation.errors import FederationError
from federation.placement import Placement
from router.core import FakeClock, InProcRouter
from shard.app import build_federated_shard


class FederationAsCore:
    SHARDS = 3

    def __init__(self, config: SchedulerConfig | None = None, clock: Any = None, shards: int | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="fed-inproc-"))
        n = shards or self.SHARDS
        ids = [f"s{i}" for i in range(n)]
        specs = tuple(
            ShardSpec(
                sid,
                f"tcp://127.0.0.1:{21000 + i}",
                f"sqlite:///{self.dir / f'{sid}.db'}?synchronous=normal",
                None,
            )
            for i, sid in enumerate(ids)
        )
        self.config = FederationConfig(
            shards=specs,
            groups={"default": tuple(ids)},
            namespaces={},
            default_group="default",
            router=RouterConfig(timeout=5.0, health_timeout=1.0, relay_interval=0.5),
            scheduler=config or SchedulerConfig(),
        )
        self.placement = Placement.from_config(self.config)
        self.servers = {
            sid: build_federated_shard(
                self.config, sid, in_process=True, **({"clock": clock} if clock else {})
            )
            for sid in ids
        }
        self.router = InProcRouter(self.config, dict(self.servers), clock=FakeClock())
        self.router.settle()

    def rpc(self, method: str, **kwargs: Any) -> Any:
        route = self.router.send(method, **kwargs)
        self.router.settle()
        try:
            return self.router.answer(route)
        finally:
            self.router.clock.advance(self.config.router.relay_interval + 0.01)
            self.router.settle()

    def __getattr__(self, name: str) -> Any:
        if name not in lsched.RPC_METHODS:
            raise AttributeError(name)

        def call(**kwargs: Any) -> Any:
            try:
                return self.rpc(name, **kwargs)
            except FederationError as e:
                # the harness compares error *kinds*: raise what the core would have raised
                if e.code == "bad_arguments":
                    raise TypeError(e.message) from None
                raise

        return call

    def close(self) -> None:
        for server in self.servers.values():
            server.store.close()
            server.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
