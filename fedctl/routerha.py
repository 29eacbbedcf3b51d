"""``fedctl router serve --standby``: wait for the leader lock, then lead until it is lost.

The lock and the watchdog are :mod:`router.standby`; this is the command's part: the messages,
SIGTERM while waiting, and the exit of a leader that lost its lock (status
:data:`router.standby.LOST_LEADERSHIP`, so a supervisor restarts it as a standby).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from federation.config import ConfigError, FederationConfig, schema_for_shard
from router.standby import (
    DEFAULT_SESSION_TIMEOUT,
    LOST_LEADERSHIP,
    FileLeaderLock,
    LeaderLock,
    Watchdog,
    wait_for_leadership,
    watchdog_for,
)


def leader_lock_for(
    config: FederationConfig, spec: str | None = None, *, session_timeout: float = DEFAULT_SESSION_TIMEOUT
) -> LeaderLock:
    """The leader lock named by ``spec`` (a ``postgresql://`` URL or a file path), or the default:
    the first Postgres store's database, else a file beside the first SQLite store."""
    if session_timeout <= 0:
        raise ConfigError(f"--leader-timeout must be > 0 seconds, not {session_timeout:g}")
    first = config.shards[0] if config.shards else None
    key = "router:" + ((first.schema or schema_for_shard(first.id)) if first else "federation")
    if spec:
        if spec.lower().startswith("postgres"):
            return _pg_lock(spec, key, session_timeout=session_timeout)
        if "://" in spec:
            raise ConfigError(f"--leader-lock {spec}: a postgresql:// URL or a file path")
        parent = Path(spec).expanduser().resolve().parent
        if not parent.is_dir():
            raise ConfigError(f"--leader-lock {spec}: no directory {parent}")
        return FileLeaderLock(str(Path(spec).expanduser()))
    for shard in config.shards:
        if shard.backend == "postgres":
            return _pg_lock(shard.store, key, session_timeout=session_timeout)
    if first is None:
        raise ConfigError("--standby needs a federation.toml with [[shards]] (or --leader-lock)")
    db = Path(first.location).expanduser().resolve()
    return FileLeaderLock(str(db.parent / "router.leader.lock"))


def _pg_lock(url: str, key: str, *, session_timeout: float) -> LeaderLock:
    from shard.store import PgLeaderLock

    return PgLeaderLock(url, key, session_timeout=session_timeout)


def lead_or_wait(config: Any, args: argparse.Namespace) -> Watchdog | None:
    """Wait until this process holds the leader lock; the watchdog to start once serving (None:
    stopped by a signal while waiting)."""
    lock = leader_lock_for(config, args.leader_lock, session_timeout=args.leader_timeout)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        waited = wait_for_leadership(
            lock,
            stop,
            on_wait=lambda: print(f"router standby: waiting for the leader lock ({lock.where})", flush=True),
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if waited is None:
        lock.close()
        return None
    print(f"router: leader after {waited:.2f} s ({lock.where})", flush=True)

    def lost() -> None:
        # a stale leader must not answer one more call: exit now, the calls in flight are retried
        print(
            "fedctl: router lost the leader lock; exiting (another router leads)", file=sys.stderr, flush=True
        )
        os._exit(LOST_LEADERSHIP)

    return watchdog_for(lock, lost, args.leader_timeout)
