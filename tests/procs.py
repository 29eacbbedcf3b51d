"""Helpers for tests that run real processes: shards as subprocesses, readiness polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federation.errors import FederationError
from federation.transport import ZmqClient
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    cond: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def call_ok(endpoint: str, method: str, timeout: float = 0.5, **kwargs: Any) -> Any:
    client = ZmqClient(endpoint, timeout=timeout)
    try:
        return client.call(method, kwargs)
    except FederationError:
        return None
    finally:
        client.close()


def fed_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class ShardProcess:
    """``fedctl shard serve`` in a subprocess on a free port."""

    def __init__(
        self,
        shard_id: str,
        db_url: str,
        *,
        schema: str | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.shard_id, self.db_url, self.schema = shard_id, db_url, schema
        self.port = port or free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ShardProcess:
        argv = [
            sys.executable,
            "-m",
            "fedctl",
            "shard",
            "serve",
            "--id",
            self.shard_id,
            "--bind",
            self.endpoint,
            "--db",
            self.db_url,
            *self.extra_args,
        ]
        if self.schema:
            argv += ["--schema", self.schema]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, env=fed_env(), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(
            lambda: self.proc.poll() is not None or call_ok(self.endpoint, "shard_info"),
            timeout,
            what=f"shard {self.shard_id} to answer",
        )
        if self.proc.poll() is not None:
            raise AssertionError(
                f"shard {self.shard_id} exited with {self.proc.returncode}"
                + (f"; log:\n{self.log_path.read_text()}" if self.log_path else "")
            )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
