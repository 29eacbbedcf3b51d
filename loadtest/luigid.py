"""A stock ``luigid`` for comparison runs, started and stopped by the load test.

``luigid --port P --address 127.0.0.1 --state-path <tmp>/state.pickle --logdir <tmp>``, the
``luigid`` next to this Python (the venv's), with a ``luigi.cfg`` of its own (``LUIGI_CONFIG_PATH``)
that sets ``[scheduler] retry_delay`` (and ``[resources]``) like the federation gets.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.drivers import ChannelError, HttpChannel


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def luigid_command() -> list[str]:
    exe = Path(sys.executable).parent / "luigid"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("luigid")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from luigi.cmdline import luigid; luigid(sys.argv[1:])"]


class Luigid:
    """One stock luigid on a free 127.0.0.1 port (``with Luigid(...) as l: l.url``)."""

    name = "luigid"

    def __init__(
        self,
        *,
        retry_delay: float = 1.0,
        resources: dict[str, int] | None = None,
        workdir: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="loadtest-luigid-"))
        self.port = port or _free_port()
        self.retry_delay = retry_delay
        self.resources = dict(resources or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, via: str) -> str:
        if via != "http":
            raise ValueError("luigid speaks only Luigi's HTTP RPC (--via http)")
        return self.url

    def start(self, timeout: float = 30.0) -> Luigid:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "luigi.cfg"
        lines = ["[scheduler]", f"retry_delay = {self.retry_delay}", ""]
        if self.resources:
            lines += ["[resources]", *[f"{k} = {v}" for k, v in self.resources.items()], ""]
        cfg.write_text("\n".join(lines))
        env = dict(os.environ, LUIGI_CONFIG_PATH=str(cfg))
        log = open(self.workdir / "luigid.out", "ab")
        self.proc = subprocess.Popen(
            [
                *luigid_command(),
                "--port",
                str(self.port),
                "--address",
                "127.0.0.1",
                "--state-path",
                str(self.workdir / "state.pickle"),
                "--logdir",
                str(self.workdir),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        ch = HttpChannel(self.url, timeout=2.0)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"luigid exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    ch.call("is_pause_enabled", {})
                    break
                except ChannelError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"luigid did not answer on {self.url} within {timeout:g} s"
                        ) from None
                    time.sleep(0.1)
        finally:
            ch.close()
        return self

    def log_tail(self) -> str:
        path = self.workdir / "luigid.out"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def roles(self) -> dict[str, list[int]]:
        return {"luigid": [self.proc.pid] if self.proc else []}

    def call(self, method: str, kwargs: dict[str, Any], timeout: float = 120.0) -> Any:
        ch = HttpChannel(self.url, timeout=timeout)
        try:
            return ch.call(method, kwargs)
        finally:
            ch.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # luigid dumps its state pickle, then exits
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Luigid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
