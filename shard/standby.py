"""A standby for a Postgres shard: wait until the owner is gone, then take the shard over.

``fedctl shard serve --standby`` runs :func:`wait_for_ownership` before it builds the shard.
The standby binds nothing and answers nothing while it waits: it only watches who holds the
shard's ownership lock (:class:`shard.store.OwnerWatch`, a read of ``pg_locks`` every
``poll`` seconds that never takes the lock).  When the lock is free it opens the store the
normal way (:func:`shard.store.open_store`): that takes the lock, bumps the ownership epoch
(so an old owner that comes back, frozen until now, is fenced out of every write) and only
then does the caller load the state and bind its endpoint, where the router finds it.

When is the lock free?

* the owner was killed (``kill -9``, OOM, a crash): its Postgres backend sees the socket
  close and exits at once (measured: the standby serves within about a second);
* the owner is frozen (SIGSTOP, a hung host): Postgres ends its session after the owner's
  ``idle_session_timeout`` (``[[shards]] session_timeout``, 5 s with standbys);
* the owner's host is gone: TCP keepalives (the owner's connection sets them) end it.

After Postgres itself restarted every session is gone at once, the owner's too, though the
owner is alive and reconnects on its next operation.  The standby then waits ``grace``
seconds before taking a free lock, so that a live owner keeps its shard rather than being
fenced out by a needless failover.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from federation.errors import ShardLockedError, StorageError
from shard.store import Store, open_store, watch_owner

log = logging.getLogger("shard.standby")

#: seconds between two looks at the lock
POLL_INTERVAL = 0.1


@dataclass
class Takeover:
    """How a standby became the owner."""

    store: Store
    waited: float  # seconds from the start of the wait to owning the store
    freed: float | None  # seconds from the moment the lock was seen free to owning the store
    last_holder: str | None  # the owner it replaced, as pg_locks described it


def wait_for_ownership(
    url: str,
    shard_id: str,
    *,
    schema: str | None,
    session_timeout: float | None,
    stop: threading.Event,
    poll: float = POLL_INTERVAL,
    grace: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Takeover | None:
    """Block until this process owns the shard's store (or ``stop`` is set: None).

    ``grace`` (default ``session_timeout``) is how long a free lock is left to its old owner
    after the standby's own connection was lost (Postgres restarted).  ``on_wait(holder)`` is
    called once when the standby starts waiting behind an owner.
    """
    watch = watch_owner(url, shard_id, schema=schema)
    if grace is None:
        grace = session_timeout or 5.0
    t0 = time.monotonic()
    reconnected_at: float | None = None
    down_since: float | None = None
    holder: str | None = None
    announced = False
    delay = poll
    try:
        while not stop.is_set():
            try:
                current = watch.holder()
            except StorageError as e:
                if down_since is None:
                    log.warning("shard %s standby: %s (retrying)", shard_id, e)
                    down_since = time.monotonic()
                stop.wait(delay)
                delay = min(delay * 2, 2.0)
                continue
            if down_since is not None:
                log.info("shard %s standby: database answers again", shard_id)
                down_since, reconnected_at, delay = None, time.monotonic(), poll
            if current is not None:
                holder = current
                if not announced and on_wait is not None:
                    on_wait(current)
                announced = True
                stop.wait(poll)
                continue
            freed = time.monotonic()
            if reconnected_at is not None and freed - reconnected_at < grace:
                stop.wait(poll)  # after a database restart: the live owner gets the first go
                continue
            try:
                store = open_store(url, shard_id, schema=schema, session_timeout=session_timeout)
            except ShardLockedError:
                stop.wait(poll)  # another standby (or the owner, reconnecting) was quicker
                continue
            except StorageError as e:
                log.warning("shard %s standby: cannot take over yet: %s", shard_id, e)
                stop.wait(poll * 5)
                continue
            now = time.monotonic()
            return Takeover(store, now - t0, now - freed if announced else None, holder)
        return None
    finally:
        watch.close()
