"""Federations of in-process shards behind the real router logic, for tests.

:class:`InProcFederation` builds N federated shards (``ShardServer`` with ``bind=None`` on
SQLite files) and a router (``router.core.InProcRouter``) on a fake clock: the one harness of
``tests/test_router_inproc.py``, ``tests/test_feed_resync_inproc.py`` and the scenarios.

:class:`FederationAsCore` is such a federation wearing the scheduler core's interface.

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
from shard.federated import FederatedCore
from shard.server import ShardServer


class InProcFederation:
    """Shards ``ids`` on SQLite files under ``directory`` and a router, all in this process.

    ``clock`` is the router's fake monotonic clock; ``shard_clock`` the shards' scheduler clock
    (wall time unless given; the same object as ``clock`` when a test moves both together).
    """

    def __init__(
        self,
        directory: Path,
        ids: list[str],
        scheduler: SchedulerConfig | None = None,
        *,
        clock: FakeClock | None = None,
        shard_clock: Any = None,
        timeout: float = 2.0,
    ) -> None:
        self.dir = directory
        specs = tuple(
            ShardSpec(
                sid,
                f"tcp://127.0.0.1:{21000 + i}",  # never bound: only named in errors
                f"sqlite:///{directory / f'{sid}.db'}?synchronous=normal",
                None,
            )
            for i, sid in enumerate(ids)
        )
        self.config = FederationConfig(
            shards=specs,
            groups={"default": tuple(ids)},
            namespaces={},
            default_group="default",
            router=RouterConfig(timeout=timeout, health_timeout=1.0, relay_interval=0.5),
            scheduler=scheduler or SchedulerConfig(),
        )
        self.placement = Placement.from_config(self.config)
        self.shard_clock = shard_clock
        self.clock = clock or FakeClock()
        self.servers: dict[str, ShardServer] = {sid: self.build(sid) for sid in ids}
        self.router = InProcRouter(self.config, dict(self.servers), clock=self.clock)
        self.router.settle()  # first contact: every shard is synchronised

    def build(self, sid: str) -> ShardServer:
        extra = {"clock": self.shard_clock} if self.shard_clock is not None else {}
        return build_federated_shard(self.config, sid, in_process=True, **extra)

    def core(self, sid: str) -> FederatedCore:
        core = self.servers[sid].core
        assert isinstance(core, FederatedCore)
        return core

    def call(self, method: str, **kwargs: Any) -> Any:
        return self.router.call(method, **kwargs)

    def task_on(self, sid: str, tag: str) -> str:
        """A task id (namespace ``xs``) that placement puts on shard ``sid``."""
        for i in range(10_000):
            task_id = f"xs.T_{tag}_{i}"
            if self.placement.owner(task_id) == sid:
                return task_id
        raise AssertionError(f"no task id for {sid}")

    def restart(self, sid: str) -> None:
        """kill -9 and start again from the store (new epoch)."""
        self.router.pool.kill(sid)
        old = self.servers[sid]
        old.store.close()
        old.close()
        self.servers[sid] = self.build(sid)
        self.router.pool.restart(sid, self.servers[sid])

    def close(self) -> None:
        for server in self.servers.values():
            server.store.close()
            server.close()


class FederationAsCore(InProcFederation):
    """A federation answering Luigi's RPC methods as the scheduler core does (``Differential``'s
    ``make_core(config, clock)``), in a temporary directory of its own."""

    SHARDS = 3

    def __init__(self, config: SchedulerConfig | None = None, clock: Any = None, shards: int | None = None):
        directory = Path(tempfile.mkdtemp(prefix="fed-inproc-"))
        ids = [f"s{i}" for i in range(shards or self.SHARDS)]
        super().__init__(directory, ids, config, shard_clock=clock, timeout=5.0)
        # the scenarios' clock jumps while the router's fake clock barely moves: pass every
        # worker's activity on to its other shards at once (luigid has one last_active per worker)
        self.router.core.workers.touch_every = 0.0

    def rpc(self, method: str, **kwargs: Any) -> Any:
        route = self.router.send(method, **kwargs)
        self.router.settle()
        try:
            return self.router.answer(route)
        finally:
            self.router.clock.advance(self.config.router.relay_interval + 0.01)
            self.router.settle()
            self.check_summaries()

    def check_summaries(self) -> None:
        """The router's table of get_work summaries (``router.summaries``) says what every shard
        would say now, wherever the router would use it: a change that reached no frame would
        make a direct grant pass over a better task."""
        for sid, link in self.router.core.pool.links.items():
            if not link.sum_ok or link.unsettled:
                continue
            core = self.servers[sid].core.core
            now = {w: core.summary_of(w) for w in core.known_workers()}
            assert link.sums == now, f"shard {sid}: the router's summaries {link.sums} != {now}"

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
        super().close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
