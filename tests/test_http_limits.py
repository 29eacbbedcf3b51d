"""The HTTP gateway's limits: nothing a client sends can take the router's process down.

The gateway runs in the test process on free ports; calls that pass its checks go to a real
router over ZeroMQ (a 1-shard in-process-free federation is not needed for these: the checks
answer before any call reaches the router, and a call that does reach it is served).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from router.http import Gateway, start_gateway
from tests.conftest import free_port

LIMIT = 64 * 1024


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    # no router listens there: calls that pass the gateway's checks fail with 503 after the timeout
    g = start_gateway(
        f"tcp://127.0.0.1:{free_port()}",
        "127.0.0.1:0",
        timeout=2.0,
        max_body_bytes=LIMIT,
        max_connections=8,
        header_timeout=1.0,
    )
    try:
        yield g
    finally:
        g.stop()


def _conn(g: Gateway) -> http.client.HTTPConnection:
    host, port = g.address.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def post(g: Gateway, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    c = _conn(g)
    c.request(
        "POST",
        path,
        body=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, json.loads(data) if data.startswith(b"{") else {}


def test_a_body_over_the_limit_is_refused_with_413_before_it_is_read(gateway: Gateway) -> None:
    host, port = gateway.address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    # announce 50 MB, send none of it: the answer must come from the headers alone
    s.sendall(
        b"POST /api/add_task HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(gateway: Gateway) -> None:
    c = _conn(gateway)
    c.putrequest("POST", "/api/add_task")
    c.putheader("Transfer-Encoding", "chunked")
    c.putheader("Content-Type", "application/x-www-form-urlencoded")
    c.endheaders()
    chunk = b"d" * 16384
    try:
        for _ in range(2 * LIMIT // len(chunk)):
            c.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        c.send(b"0\r\n\r\n")
    except OSError:
        pass  # the gateway may close the connection as soon as it has answered
    r = c.getresponse()
    assert r.status == 413
    c.close()


def test_json_nested_too_deeply_is_a_400_not_a_500(gateway: Gateway) -> None:
    deep = "[" * 10_000 + "]" * 10_000  # 20 kB, under the body limit
    status, body = post(gateway, "/api/add_task", urllib.parse.urlencode({"data": deep}).encode())
    assert status == 400 and body["error"]["code"] == "bad_request"
    nested = '{"task_id": ' + "[" * 5000 + "]" * 5000 + "}"  # valid JSON, too deep for the wire
    status, body = post(gateway, "/api/add_task", urllib.parse.urlencode({"data": nested}).encode())
    assert status == 400 and body["error"]["code"] == "bad_request"


def test_a_static_path_with_a_nul_byte_is_a_404(gateway: Gateway) -> None:
    c = _conn(gateway)
    c.request("GET", "/static/visualiser/%00index.html")
    r = c.getresponse()
    r.read()
    assert r.status == 404
    c.request("GET", "/static/visualiser/index.html")
    r = c.getresponse()
    assert r.status == 200 and b"<html" in r.read().lower()
    c.close()


def test_connections_over_the_cap_are_refused_and_idle_ones_time_out(gateway: Gateway) -> None:
    host, port = gateway.address.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
    try:
        time.sleep(0.2)  # let the gateway's loop accept them
        extra = socket.create_connection((host, int(port)), timeout=10)
        answer = extra.recv(4096)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
        # idle connections that never send headers are closed after header_timeout (1 s)
        for s in idle:
            s.settimeout(10)
            assert s.recv(1) == b""  # closed by the gateway
        c = _conn(gateway)  # and the gateway serves again
        c.request("HEAD", "/")
        assert c.getresponse().status == 204
        c.close()
    finally:
        for s in idle:
            s.close()
