"""Child processes for ``fedctl up``: start, watch, restart, stop.

Each child is a ``fedctl`` subcommand run with the same Python.  A child
that dies is reported and restarted with a backoff; the first SIGINT/SIGTERM
stops every child cleanly (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from federation.errors import FederationError
from federation.transport import ZmqClient


@dataclass
class Child:
    name: str
    argv: list[str]  # arguments after ``fedctl``
    endpoint: str | None = None  # ZeroMQ endpoint answering ``ready_method`` when the child is up
    ready_method: str = "shard_info"
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_path: Path | None = field(default=None)


def answers(endpoint: str, method: str, timeout: float = 0.5) -> Any:
    client = ZmqClient(endpoint, timeout=timeout)
    try:
        return client.call(method, {})
    except FederationError:
        return None
    finally:
        client.close()


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
        log = open(child.log_path, "ab")
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "fedctl", *child.argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()

    def start(self, timeout: float = 60.0) -> None:
        for child in self.children:
            self._spawn(child)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.endpoint is None:
                continue
            while not answers(child.endpoint, child.ready_method):
                assert child.proc is not None
                if child.proc.poll() is not None:
                    tail = child.log_path.read_text()[-2000:] if child.log_path else ""
                    self.stop()
                    raise FederationError(
                        f"{child.name} exited with code {child.proc.returncode} while starting:\n{tail}"
                    )
                if time.monotonic() > deadline:
                    self.stop()
                    raise FederationError(
                        f"{child.name} did not answer on {child.endpoint} within {timeout:g}s"
                    )
                time.sleep(0.1)

    def check(self) -> None:
        """Report and restart children that died (with a backoff of up to 10 s)."""
        now = time.monotonic()
        for child in self.children:
            if self._stopping or child.proc is None or child.proc.poll() is None:
                continue
            if child.next_start == 0.0:
                delay = min(10.0, 0.5 * 2 ** min(child.restarts, 5))
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
