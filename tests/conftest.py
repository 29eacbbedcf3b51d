"""Shared fixtures: a real PostgreSQL server and unique, dropped-afterwards schemas."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _pg_answers(url: str) -> bool:
    try:
        eng = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(sa.select(1))
        eng.dispose()
        return True
    except Exception:
        return False


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


#: ports handed out in this test process (never twice)
_GIVEN: set[int] = set()


def free_port() -> int:
    """A free 127.0.0.1 port below the kernel's ephemeral range.

    ``bind(0)`` picks from the ephemeral range, which every outgoing connection (ZeroMQ,
    Postgres, HTTP clients) also draws from: between this call and the server's bind such a
    connection could take the port.  Below the range only another server's bind can.
    """
    top = min(32000, _ephemeral_start() - 1)
    rng = random.Random()
    for _ in range(500):
        port = rng.randint(20000, top)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a live PostgreSQL: $FED_TEST_PG_URL, the local server, or a throwaway cluster."""
    url = os.environ.get("FED_TEST_PG_URL", DEFAULT_PG_URL)
    if _pg_answers(url):
        yield url
        return
    initdb = shutil.which("initdb") or next(
        iter(sorted(__import__("glob").glob("/usr/lib/postgresql/*/bin/initdb"))), None
    )
    if not initdb:
        if os.environ.get("CI"):
            pytest.fail("no PostgreSQL server and no initdb to start one")
        pytest.skip("no PostgreSQL server available")
    bindir = os.path.dirname(initdb)
    tmp = tempfile.mkdtemp(prefix="fedpg-")
    port = free_port()
    subprocess.run([initdb, "-D", tmp, "-U", "postgres", "--auth=trust"], check=True, capture_output=True)
    subprocess.run(
        [
            os.path.join(bindir, "pg_ctl"),
            "-D",
            tmp,
            "-l",
            os.path.join(tmp, "log"),
            "-w",
            "-o",
            f"-c listen_addresses=127.0.0.1 -c port={port} -k {tmp}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while not _pg_answers(url) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        yield url
    finally:
        subprocess.run(
            [os.path.join(bindir, "pg_ctl"), "-D", tmp, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)


def _drop_schemas(pg_url: str, names: list[str]) -> None:
    eng = sa.create_engine(pg_url)
    with eng.begin() as c:
        for name in names:
            c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    eng.dispose()


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A unique schema name for this test; the schema (if created) is dropped afterwards."""
    name = f"fedtest_{uuid.uuid4().hex[:12]}"
    yield name
    _drop_schemas(pg_url, [name])


@pytest.fixture
def pg_schemas(pg_url: str) -> Iterator[Callable[[int], list[str]]]:
    """``pg_schemas(n)``: n unique schema names; every schema handed out is dropped afterwards."""
    names: list[str] = []

    def make(n: int) -> list[str]:
        new = [f"fedtest_{uuid.uuid4().hex[:12]}" for _ in range(n)]
        names.extend(new)
        return new

    yield make
    _drop_schemas(pg_url, names)
