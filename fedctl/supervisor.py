"""Child processes for ``fedctl up``: start, watch, restart, stop.

Each child is a ``fedctl`` subcommand run with the same Python.  A child
that dies is reported and restarted with a backoff; a child that refuses to
run (exit status 2: fedctl's "user mistake", such as a port already in use
or a store served by another process) stops the whole federation with its
one-line reason, since restarting it cannot help.  The first SIGINT/SIGTERM
stops every child cleanly (SIGTERM, then SIGKILL after a grace period).

:class:`DataDirLock` fences a second ``fedctl up`` out of a data directory
before it writes anything there; :func:`check_free` tells a port in use
before any child is started.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from federation.errors import ConfigError, FederationError
from federation.transport import ZmqClient


@dataclass
class Child:
    name: str
    argv: list[str]  # arguments after ``fedctl``
    endpoint: str | None = None  # ZeroMQ endpoint answering ``ready_method`` when the child is up
    ready_method: str = "shard_info"
    #: the CURVE keys the readiness check uses on a secured federation (federation.keys.ClientCurve)
    curve: Any = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    #: crashes in a row, each after less than HEALTHY_AFTER seconds of running: the backoff's exponent
    streak: int = 0
    #: when this run of the child started (monotonic)
    started: float = 0.0
    next_start: float = 0.0
    log_path: Path | None = field(default=None)
    #: size of the log when this run of the child started: what it wrote before belongs to earlier runs
    log_offset: int = 0

    def error_line(self) -> str:
        """The child's own one-line reason for exiting (this run's log only), or its exit status."""
        code = self.proc.returncode if self.proc else None
        text = ""
        if self.log_path is not None:
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(self.log_offset)
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                text = ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith("fedctl: error: "):
                return line.removeprefix("fedctl: error: ")
        last = lines[-1] if lines else "no output"
        return f"exited with code {code}: {last[:200]}"


#: exit status of a fedctl command that refused to run (a user mistake); restarting it cannot help
REFUSED = 2


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/fedctl.lock``, held while ``fedctl up``/``demo`` runs.

    Taken before anything shared is written: a second ``fedctl up`` on the
    same data directory stops with one line and changes nothing.  The kernel
    drops the lock when the process dies, so a crash leaves no stale lock.
    """

    NAME = "fedctl.lock"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / self.NAME
        self._fd: int | None = None

    def acquire(self, *, create: bool = True) -> DataDirLock:
        """Take the lock; with ``create=False`` only an existing lock file is opened (nothing is written)."""
        if self._fd is not None:
            if create:
                self._stamp(self._fd)
            return self
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            if create:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError as e:
            if not create:
                return self  # a new data directory: nobody can hold its lock
            raise ConfigError(f"--data-dir {self.data_dir}: cannot use it: {e.strerror}") from None
        except OSError as e:
            raise ConfigError(f"--data-dir {self.data_dir}: cannot use it: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"--data-dir {self.data_dir}: cannot lock {self.path}: {e.strerror}"
                ) from None
            raise ConfigError(
                f"a federation is already running from {self.data_dir}"
                + (f" ({holder})" if holder else "")
                + ": stop it first (Ctrl-C where it runs) or give another --data-dir"
            ) from None
        if create:
            self._stamp(fd)
        self._fd = fd
        return self

    @staticmethod
    def _stamp(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"fedctl up, pid {os.getpid()}".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def check_free(endpoints: list[tuple[str, str]]) -> None:
    """Raise a :class:`ConfigError` naming the first ``(what, host:port or tcp://...)`` already in use."""
    for what, address in endpoints:
        hostport = address.removeprefix("tcp://")
        host, sep, port = hostport.rpartition(":")
        if not sep or not port.isdigit() or int(port) == 0 or address.startswith(("ipc://", "inproc://")):
            continue
        host = host.strip("[]")
        if host in ("*", ""):
            host = "0.0.0.0"
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            try:
                sock.bind((host, int(port)))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise ConfigError(
                        f"{what} {address} is already in use (another federation? "
                        f"fedctl status --router tcp://{host}:{port} tells); stop it or pick another port"
                    ) from None
                # another problem (a name that is not local...): the child reports it itself


def answers(endpoint: str, method: str, timeout: float = 0.5, curve: Any = None) -> Any:
    client = ZmqClient(endpoint, timeout=timeout, curve=curve)
    try:
        return client.call(method, {})
    except FederationError:
        return None
    finally:
        client.close()


#: seconds a child must run before its death counts as a new crash rather than one more in a row
HEALTHY_AFTER = 60.0


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        log_dir: Path,
        *,
        out: TextIO = sys.stdout,
        env: dict[str, str] | None = None,
    ) -> None:
        self.children = children
        self.log_dir = log_dir
        self.out = out
        self.env = env
        self._stopping = False
        log_dir.mkdir(parents=True, exist_ok=True)

    def _spawn(self, child: Child) -> None:
        child.log_path = self.log_dir / f"{child.name}.log"
        child.started = time.monotonic()
        log = open(child.log_path, "ab")
        child.log_offset = log.tell()
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "fedctl", *child.argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()

    def start(self, timeout: float = 60.0) -> None:
        """Start the children with an endpoint, wait until each answers, then start the others
        (shard standbys: started first, one could take a shard before its owner)."""
        for child in self.children:
            if child.endpoint is not None:
                self._spawn(child)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.endpoint is None:
                continue
            while not answers(child.endpoint, child.ready_method, curve=child.curve):
                assert child.proc is not None
                if child.proc.poll() is not None:
                    self.stop()
                    raise FederationError(f"{child.name} could not start: {child.error_line()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise FederationError(
                        f"{child.name} did not answer on {child.endpoint} within {timeout:g}s"
                    )
                time.sleep(0.1)
        for child in self.children:
            if child.endpoint is None:
                self._spawn(child)

    def check(self) -> None:
        """Report and restart children that died, with a backoff: 0.5 s doubling up to 10 s for
        crashes in a row; a child that ran for ``HEALTHY_AFTER`` seconds before it died starts over
        at 0.5 s (five crashes spread over a week do not make every later restart wait 10 s)."""
        now = time.monotonic()
        for child in self.children:
            if self._stopping or child.proc is None or child.proc.poll() is None:
                continue
            reason = child.error_line() if child.proc.returncode == REFUSED else ""
            # a port taken or a bad config: restarting cannot help.  A store lock can be transient (the
            # killed predecessor's Postgres session not yet gone), so that one is retried as a crash.
            if reason and "already served" not in reason:
                self.stop()
                raise FederationError(
                    f"{child.name} stopped: {reason} (log: {child.log_path}); "
                    "every process of this federation was stopped"
                )
            if child.next_start == 0.0:
                if now - child.started >= HEALTHY_AFTER:
                    child.streak = 0
                delay = min(10.0, 0.5 * 2 ** min(child.streak, 5))
                child.streak += 1
                child.next_start = now + delay
                print(
                    f"fedctl up: {child.name} exited with code {child.proc.returncode}; restarting in {delay:.1f}s "
                    f"(log: {child.log_path})",
                    file=self.out,
                    flush=True,
                )
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                self._spawn(child)
                print(
                    f"fedctl up: {child.name} restarted (restart #{child.restarts})",
                    file=self.out,
                    flush=True,
                )

    def run_forever(self, on_tick: Callable[[], None] | None = None) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self._stopping = True

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self._stopping:
                self.check()
                if on_tick:
                    on_tick()
                time.sleep(0.2)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.stop()

    def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        for child in self.children:
            if child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            if not child.proc:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
