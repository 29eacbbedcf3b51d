"""Router redundancy: one leader router at a time, standbys waiting on a leader lock.

``fedctl router serve --standby`` runs :func:`wait_for_leadership` before it binds anything:
the process binds neither its ZeroMQ front nor its HTTP gateway, and answers nothing, until
it holds the federation's *leader lock*.  Then it serves like any router, and a
:class:`Watchdog` checks every ``interval`` seconds that it still holds the lock; a leader that
lost it (frozen, then woken after a standby took over) stops serving and exits.

Why a leader rather than active-active: the relay of cross-shard dependencies, the resource
arbiter of ``get_work`` and the reset of cross-shard batches are each one loop over all shards;
two routers running them at once would be correct only because shards are the source of truth,
and would double the relay's pulls.  Everything those loops need is rebuilt from the shards when a
router starts (``fed_state``: workers, mirrors, feed positions, hosted batch runners), so the
standby that takes over starts exactly like a restarted router (docs/operations.md).

The lock:

* ``shard.store.PgLeaderLock`` (the one module that talks to Postgres; ``fedctl`` picks the lock,
  :func:`fedctl.routerha.leader_lock_for`): a session advisory lock in the Postgres database of the federation's
  stores (the first Postgres shard's), on a connection whose ``idle_session_timeout`` is
  ``session_timeout``: a killed leader's backend exits at once, a frozen leader's session ends
  after ``session_timeout`` (the watchdog's pings keep a live leader's session busy);
* :class:`FileLeaderLock`: ``flock`` on a file (the default when every store is SQLite: the
  file ``router.leader.lock`` beside the first shard's database, so it is shared by the routers
  of one host only).  A killed leader's lock is freed by the kernel at once; a frozen leader keeps
  it (a frozen router on one host is taken over only when it is killed).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from federation.config import ConfigError

log = logging.getLogger("router.standby")

#: seconds between two tries of the lock while waiting
POLL_INTERVAL = 0.1
#: seconds between two checks that the leader still holds the lock
WATCH_INTERVAL = 1.0
#: a frozen leader's Postgres session ends after this many seconds (``--leader-timeout``)
DEFAULT_SESSION_TIMEOUT = 5.0
#: exit status of a router that lost the leader lock (its supervisor restarts it as a standby)
LOST_LEADERSHIP = 3


class LeaderLock(Protocol):
    where: str

    def try_acquire(self) -> bool: ...

    def held(self) -> bool: ...

    def close(self) -> None: ...


class FileLeaderLock:
    """``flock`` on a file (its real path: a symlink to it is the same lock)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)
        self.where = f"file {self.path}"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"cannot open the router leader lock {self.path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        # a lock file deleted and made again meanwhile is not the one we locked: try again
        if not self._same_file(fd):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def held(self) -> bool:
        # the lock file deleted (or replaced) lets another router lock a new file: we lost it
        return self._fd is not None and self._same_file(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def wait_for_leadership(
    lock: LeaderLock,
    stop: threading.Event,
    *,
    poll: float = POLL_INTERVAL,
    on_wait: Callable[[], None] | None = None,
) -> float | None:
    """Block until this process holds ``lock``: seconds waited, or None when ``stop`` was set."""
    t0 = time.monotonic()
    announced = False
    while not stop.is_set():
        if lock.try_acquire():
            return time.monotonic() - t0
        if not announced and on_wait is not None:
            on_wait()
        announced = True
        stop.wait(poll)
    return None


class Watchdog(threading.Thread):
    """Checks every ``interval`` seconds that the leader still holds its lock; calls ``on_lost`` once
    when it does not.

    It is also the leader's *lease*: :meth:`valid` is True for ``lease`` seconds after the last
    check that found the lock held.  The router serves nothing while it is False
    (``Router.lease``), so a leader frozen longer than that, woken while a standby may lead, answers
    no call and relays nothing before its next check: it goes on if it still holds the lock, exits if
    not.  A standby can take over only after the leader's session was idle ``session_timeout`` and
    ``lease`` is shorter than that, so two routers never serve at once.
    """

    def __init__(
        self,
        lock: LeaderLock,
        on_lost: Callable[[], None],
        *,
        interval: float = WATCH_INTERVAL,
        lease: float | None = None,
    ) -> None:
        super().__init__(name="router-leader-watchdog", daemon=True)
        self.lock = lock
        self.on_lost = on_lost
        self.interval = interval
        self.lease = lease if lease is not None else 2 * interval
        if self.lease <= interval:
            raise ConfigError(
                f"leader lease {self.lease:g} s must be longer than the check interval {interval:g} s"
            )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.lost = False
        self._valid_until = time.monotonic() + self.lease

    def valid(self) -> bool:
        if time.monotonic() < self._valid_until:
            return True
        self._wake.set()  # check now rather than at the next interval
        return False

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            started = time.monotonic()
            if not self.lock.held():
                self.lost = True
                log.error("router: lost the leader lock (%s): another router leads now", self.lock.where)
                self.on_lost()
                return
            self._valid_until = started + self.lease

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def watchdog_for(lock: LeaderLock, on_lost: Callable[[], None], session_timeout: float) -> Watchdog:
    """The watchdog of a leader: checks 4 times per ``session_timeout`` (at most every second), a lease
    of half of it (at least twice the interval), so a frozen leader stops serving before a standby
    can take its lock over."""
    interval = min(WATCH_INTERVAL, session_timeout / 4)
    return Watchdog(lock, on_lost, interval=interval, lease=max(session_timeout / 2, 2 * interval))

    def stop(self) -> None:
        self._stop.set()
