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
from typing import Any

from router.standby import LOST_LEADERSHIP, Watchdog, leader_lock_for, wait_for_leadership, watchdog_for


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
