"""The one way to assemble a shard: store, core restored from it, server.

``fedctl shard serve`` and the tests both build shards here, so what the
tests exercise is what production runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from federation import __version__
from federation.config import SchedulerConfig
from shard.scheduler import RPC_METHODS, SchedulerCore
from shard.server import ShardServer
from shard.store import open_store


def build_shard(
    shard_id: str,
    bind: str,
    db_url: str,
    *,
    config: SchedulerConfig | None = None,
    schema: str | None = None,
    prune_interval: float = 60.0,
    max_message_bytes: int | None = None,
    clock: Callable[[], float] = time.time,
) -> ShardServer:
    """Open the store (taking ownership), rebuild the core from it, bind the server."""
    store = open_store(db_url, shard_id, schema=schema)
    try:
        core = SchedulerCore(config or SchedulerConfig(), clock=clock)
        core.restore(store.load())
        core.collect_changes()  # restoring is not a change
        extra = {"max_message_bytes": max_message_bytes} if max_message_bytes else {}
        return ShardServer(shard_id, bind, core, store, prune_interval=prune_interval, methods=RPC_METHODS,
                           version=__version__, **extra)
    except BaseException:
        store.close()
        raise
