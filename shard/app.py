"""The one way to assemble a shard: store, core restored from it, server.

``fedctl shard serve`` and the tests both build shards here, so what the
tests exercise is what production runs.  A shard of a federation
(:func:`build_federated_shard`) is the same shard with its core wrapped in
:class:`shard.federated.FederatedCore`, which adds the router's ``fed_*``
methods (mirrors of remote dependencies, the change feed, global resources).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from federation import __version__
from federation.config import FederationConfig, SchedulerConfig
from federation.errors import BadArgumentsError
from federation.placement import Placement
from shard.federated import FederatedCore
from shard.migrate import MigratingCore
from shard.scheduler import RPC_METHODS, SchedulerCore
from shard.server import ShardServer
from shard.store import Store, open_store


def build_shard(
    shard_id: str,
    bind: str | None,
    db_url: str,
    *,
    config: SchedulerConfig | None = None,
    schema: str | None = None,
    prune_interval: float = 60.0,
    max_message_bytes: int | None = None,
    placement: Placement | None = None,
    clock: Callable[[], float] = time.time,
    session_timeout: float | None = None,
    store: Store | None = None,
    curve: Any = None,
) -> ShardServer:
    """Open the store (taking ownership), rebuild the core from it, bind the server.

    ``bind=None`` serves no socket: the caller drives ``ShardServer.handle_batch`` in-process.
    ``store``: one already opened (a standby that took over, ``shard.standby``); else
    ``open_store(db_url, ...)`` (``session_timeout``: a Postgres owner's idle session timeout).

    With ``placement`` the shard is a federation member: it tells its own tasks from mirrors
    of other shards' tasks and serves the router's ``fed_*`` methods.
    """
    if store is None:
        if session_timeout is None:
            store = open_store(db_url, shard_id, schema=schema)
        else:
            store = open_store(db_url, shard_id, schema=schema, session_timeout=session_timeout)
    try:
        core = SchedulerCore(config or SchedulerConfig(), clock=clock)
        served: SchedulerCore | FederatedCore = core
        extra: dict[str, Callable[..., Any]] = {"task_events": task_events_method(store, shard_id)}
        if placement is not None:
            served = MigratingCore(core, shard_id, placement, clock=clock, events_of=store.events_of)
            extra.update(served.extra_methods())
        served.restore(store.load())
        served.collect_changes()  # restoring is not a change
        # The restored state lives as long as the process: keep the cyclic GC from rescanning it
        # (a full collection over 100k tasks costs 10-15 ms, felt as a get_work outlier).
        gc.freeze()
        limits = {"max_message_bytes": max_message_bytes} if max_message_bytes else {}
        return ShardServer(
            shard_id,
            bind,
            served,
            store,
            prune_interval=prune_interval,
            methods=RPC_METHODS,
            extra_methods=extra,
            version=__version__,
            curve=curve,
            **limits,
        )
    except BaseException:
        store.close()
        raise


def task_events_method(store: Store, shard_id: str) -> Callable[..., dict[str, Any]]:
    """``task_events(task_id, limit=500)``: a task's status changes from this shard's event table,
    oldest first, each ``{"status", "worker", "host", "time"}`` (the TUI's history of a task)."""

    def task_events(task_id: str, limit: int = 500) -> dict[str, Any]:
        if not isinstance(task_id, str) or not task_id:
            raise BadArgumentsError("task_events: task_id must be a non-empty string")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
            raise BadArgumentsError("task_events: limit must be an integer from 1 to 10000")
        events = store.task_events(task_id, limit + 1)
        return {
            "task_id": task_id,
            "shard_id": shard_id,
            "events": [
                {"status": e.status, "worker": e.worker, "host": e.host, "time": e.ts}
                for e in events[-limit:]
            ],
            "truncated": len(events) > limit,
        }

    return task_events


def build_federated_shard(
    config: FederationConfig,
    shard_id: str,
    *,
    bind: str | None = None,
    prune_interval: float = 60.0,
    clock: Callable[[], float] = time.time,
    in_process: bool = False,
    store: Store | None = None,
) -> ShardServer:
    """One shard of a federation, everything from ``federation.toml``: endpoint (unless ``bind``),
    store and schema, Luigi's ``[scheduler]``/``[resources]``, and the placement.
    ``in_process`` binds no socket (``router.core.InProcRouter`` drives it); ``store``: the store a
    standby took over (``shard.standby.wait_for_ownership``)."""
    spec = config.shard(shard_id)
    curve = None
    if config.security is not None and not in_process:
        from federation.keys import shard_curve

        curve = shard_curve(config.security)
    return build_shard(
        shard_id,
        None if in_process else (bind or spec.endpoint),
        spec.store,
        config=config.scheduler,
        schema=spec.schema,
        prune_interval=prune_interval,
        max_message_bytes=config.router.max_message_bytes,
        placement=Placement.from_config(config),
        clock=clock,
        session_timeout=spec.owner_session_timeout,
        store=store,
        curve=curve,
    )
