"""A throwaway PostgreSQL cluster the chaos load test starts, restarts and removes.

``initdb`` into a temporary directory, ``pg_ctl start`` on a free 127.0.0.1 port (its Unix
socket in the same directory), trust authentication, the ``postgres`` database.  The chaos
faults restart it (``pg_ctl restart``: ``fast`` closes every session cleanly, ``immediate`` is
a crash followed by recovery); the machine's own server is never touched.

PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres`` system
user and every command runs as that user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from loadtest.servers import free_port


def _bindir() -> str:
    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError("no PostgreSQL server binaries (pg_ctl, initdb) found for the throwaway cluster")
    return os.path.dirname(candidates[-1])


class PgCluster:
    """``start()``, ``restart(mode)``, ``stop()``; ``url`` once started."""

    def __init__(self, *, port: int | None = None, user: str = "postgres") -> None:
        self.bindir = _bindir()
        self.port = port or free_port()
        self.datadir = tempfile.mkdtemp(prefix="lt-pg-")
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(user)
            except KeyError as e:
                raise RuntimeError(
                    f"running as root and there is no {user!r} user to run PostgreSQL as"
                ) from e
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", user, "--"]
        self.restarts = 0

    def _run(self, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, timeout=timeout, cwd=self.datadir
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"{os.path.basename(argv[0])} failed: {(res.stderr or res.stdout).strip()[-500:]}"
            )
        return res

    def _pg_ctl(self, *args: str) -> None:
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, *args)

    def start(self) -> PgCluster:
        self._run(
            os.path.join(self.bindir, "initdb"),
            "-D",
            self.datadir,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        )
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.datadir}'\nmax_connections = 200\n"
            )
        self._pg_ctl("-l", os.path.join(self.datadir, "server.log"), "-w", "-t", "60", "start")
        return self

    def restart(self, mode: str = "fast") -> float:
        """Stop (``fast`` or ``immediate``) and start again; returns the seconds it was down."""
        if mode not in ("fast", "immediate"):
            raise ValueError(f"mode must be fast or immediate, not {mode!r}")
        t0 = time.monotonic()
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")
        self._pg_ctl("-l", os.path.join(self.datadir, "server.log"), "-w", "-t", "60", "start")
        self.restarts += 1
        return time.monotonic() - t0

    def pids(self) -> list[int]:
        """The postmaster and its children (for CPU accounting)."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                master = int(f.readline())
        except (OSError, ValueError):
            return []
        from loadtest import procstats

        return [master, *procstats.children(master)]

    def stop(self) -> None:
        try:
            self._pg_ctl("-m", "immediate", "-w", "stop")
        except (RuntimeError, subprocess.SubprocessError):
            pass
        shutil.rmtree(self.datadir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
