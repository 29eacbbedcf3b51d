"""ZeroMQ sockets, configured once, and the request/reply client.

This module is the one place that creates ZeroMQ sockets and sets their
options (MEASURED-LIMITS.md §5): ``LINGER`` 0 so ``ctx.term()`` never hangs,
``ROUTER_MANDATORY`` on every ROUTER so a vanished peer raises instead of
being dropped silently, heartbeats so a frozen peer is noticed, and
``MAXMSGSIZE`` on every socket that accepts requests.

Two request/reply clients over one implementation (like httpx's sync and
async transports): :func:`request_frames` builds a request, :func:`reply_result`
turns a reply into its result or the server's error (the one place errors are
mapped).  :class:`ZmqClient` is the blocking flavour, :class:`AsyncZmqClient`
the asyncio one (the HTTP gateway's).

:class:`ZmqClient` is safe to share between threads (each thread gets its own socket) and
across ``fork()`` (a child builds a new context), because Luigi's worker
calls the scheduler from its keep-alive thread and from forked task
processes.  A request that times out closes its socket, so a late reply can
never be mistaken for the answer to a later request; the next call connects
afresh, which is also how a restarted server is picked up.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from typing import Any

import zmq
import zmq.asyncio

from federation import wire
from federation.errors import ProtocolError, RequestTimeout, TransportError, error_from_wire

_log = logging.getLogger("federation.transport")

HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 4000


def _common_options(sock: zmq.Socket, max_message_bytes: int | None) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)
    if max_message_bytes:
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)


def bind_router(
    ctx: zmq.Context,
    endpoint: str,
    *,
    max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
    curve: Any = None,
) -> zmq.Socket:
    """A ROUTER socket bound to ``endpoint`` (``tcp://127.0.0.1:*`` picks a free port).

    ``curve``: a :class:`federation.keys.ServerCurve` whose gatekeeper runs on ``ctx``; then only
    its admitted keys get through, and :func:`recv_frames_user` tells who sent each message.
    """
    sock = ctx.socket(zmq.ROUTER)
    if curve is not None:
        curve.apply(sock)
    _common_options(sock, max_message_bytes)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise TransportError(f"cannot bind {endpoint}: {e}") from e
    if curve is not None and hasattr(curve, "watch"):
        curve.watch(sock)  # plaintext peers never reach the ZAP handler: logged from the monitor
    return sock


def connect_dealer(
    ctx: zmq.Context,
    endpoint: str,
    *,
    identity: bytes | None = None,
    max_message_bytes: int | None = None,
    immediate: bool = False,
    curve: Any = None,
) -> zmq.Socket:
    """A DEALER connected to ``endpoint``.

    ``immediate`` (ZMQ_IMMEDIATE, set before connecting) queues messages only on a completed
    connection: a send to a peer that is down fails at once (EAGAIN) instead of waiting in the
    pipe and being delivered, stale, when the peer comes back.  The router uses it for shards.
    """
    sock = ctx.socket(zmq.DEALER)
    if curve is not None:  # a federation.keys.ClientCurve
        curve.apply(sock)
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    _common_options(sock, max_message_bytes)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise TransportError(f"cannot connect to {endpoint}: {e}") from e
    return sock


def last_endpoint(sock: zmq.Socket) -> str:
    ep = sock.getsockopt(zmq.LAST_ENDPOINT)
    return ep.decode() if isinstance(ep, bytes) else str(ep)


# plain ints: pyzmq's flag enums cost an Enum construction per ``|`` (measured: send_multipart 2.0 µs
# against 0.8 µs for the same two frames sent with int flags; a hot path sends millions)
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_RCVMORE = int(zmq.RCVMORE)


# the compiled socket's own methods: ``zmq.Socket``'s Python wrappers (``send``, ``recv_multipart``,
# ``getsockopt``) add a call layer and build flag enums on every frame; on the router's loop, which
# moves every message of the federation, a cProfile of the 20k-task load test put them at ~6 %
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get


def has_input(sock: zmq.Socket) -> bool:
    """A message is waiting (cheaper than a non-blocking recv that raises ``zmq.Again``: 0.9 µs against 3.2)."""
    return bool(int(_get(sock, _EVENTS)) & _POLLIN)


def recv_frames(sock: zmq.Socket) -> list[bytes] | None:
    """One waiting message without blocking, or None."""
    try:
        frame = _recv(sock, _NOBLOCK, False)
    except zmq.Again:
        return None
    # a multipart message arrives whole: its other frames are there (a frame object tells
    # whether more follow without a getsockopt per frame)
    frames = [frame.bytes]
    while frame.more:
        frame = _recv(sock, _NOBLOCK, False)
        frames.append(frame.bytes)
    return frames


def recv_frames_user(sock: zmq.Socket) -> tuple[list[bytes], str | None] | None:
    """One waiting message without blocking and the principal ZAP gave its sender (``User-Id``;
    None on a socket without CURVE), or None when nothing waits."""
    try:
        first = sock.recv(_NOBLOCK, copy=False)
    except zmq.Again:
        return None
    try:
        got = first.get("User-Id")
        user = str(got) if got else None
    except zmq.ZMQError:
        user = None
    frames = [first.bytes]
    more = first.more
    while more:
        frames.append(sock.recv(_NOBLOCK))
        more = bool(sock.getsockopt(_RCVMORE))
    return frames, user


def send_frames(sock: zmq.Socket, frames: list[bytes]) -> bool:
    """Send without blocking; False when the peer is gone or full (ROUTER_MANDATORY).

    ZeroMQ delivers a multipart message whole or not at all; a full queue or a gone peer is
    reported on the first frame, before anything is queued.
    """
    try:
        last = len(frames) - 1
        for i in range(last):
            _send(sock, frames[i], _NOBLOCK_MORE)
        _send(sock, frames[last], _NOBLOCK)
        return True
    except zmq.Again:
        return False
    except zmq.ZMQError as e:
        if e.errno == zmq.EHOSTUNREACH:
            return False
        raise TransportError(f"send failed: {e}") from e


def request_frames(
    req_id: int,
    method: str,
    kwargs: dict[str, Any],
    meta: dict[str, Any],
    routing_key: bytes | None = None,
) -> list[bytes]:
    """``[routing_key, body]`` of one request (the routing key names the task, if any)."""
    body = wire.encode_request(req_id, method, kwargs, meta)
    return [wire.routing_key(kwargs) if routing_key is None else routing_key, body]


def read_reply(frames: list[bytes]) -> wire.Reply | None:
    """The reply in ``frames``, or None when it cannot be decoded (dropped by both clients)."""
    try:
        return wire.decode_reply(frames[-1])
    except ProtocolError:
        return None


def reply_result(reply: wire.Reply) -> Any:
    """The result of a reply, or the server's error raised as its :class:`FederationError` family."""
    if reply.ok:
        return reply.result
    raise error_from_wire(reply.error)


def _check_endpoint(endpoint: Any) -> None:
    if not isinstance(endpoint, str) or not all("://" in ep for ep in endpoint.split(",")):
        raise TransportError(
            f"not a ZeroMQ endpoint: {endpoint!r} (expected e.g. tcp://127.0.0.1:5555, or a "
            "comma-separated list of redundant routers)"
        )


def split_endpoints(endpoint: str) -> list[str]:
    """``tcp://a:1,tcp://b:2`` -> both: the routers of one federation, one leading (router/standby.py)."""
    return [ep.strip() for ep in endpoint.split(",") if ep.strip()]


def connect_any(ctx: zmq.Context, endpoint: str, *, curve: Any = None) -> zmq.Socket:
    """A client DEALER for one endpoint, or for a list of redundant routers: one DEALER connected to
    all of them with ZMQ_IMMEDIATE, so requests go only to a completed connection: the leader's (a
    standby binds nothing). A request that times out drops the socket; the next one connects afresh
    and goes to whichever router serves by then."""
    endpoints = split_endpoints(endpoint)
    sock = connect_dealer(ctx, endpoints[0], immediate=len(endpoints) > 1, curve=curve)
    for ep in endpoints[1:]:
        try:
            sock.connect(ep)
        except zmq.ZMQError as e:
            sock.close(0)
            raise TransportError(f"cannot connect to {ep}: {e}") from e
    return sock


class ZmqClient:
    """Blocking request/reply over ZeroMQ; one DEALER per thread and process."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        meta: dict[str, Any] | None = None,
        curve: Any = None,
    ) -> None:
        _check_endpoint(endpoint)
        self.endpoint = endpoint
        self.timeout = timeout
        self.meta = dict(meta or {})
        #: a federation.keys.ClientCurve: this client's keys and the server's public key
        self.curve = curve
        self._pid = os.getpid()
        self._ctx: zmq.Context | None = None
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False

    # -- sockets -------------------------------------------------------------
    def _context(self) -> zmq.Context:
        pid = os.getpid()
        if self._ctx is None or pid != self._pid:
            # After fork() the parent's context must not be touched; start over.
            with self._lock:
                if self._ctx is None or pid != self._pid:
                    self._pid = pid
                    self._ctx = zmq.Context()
                    self._local = threading.local()
        return self._ctx

    def _socket(self) -> zmq.Socket:
        ctx = self._context()
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = connect_any(ctx, self.endpoint, curve=self.curve)
            self._local.sock = sock
        return sock

    def _drop_socket(self) -> None:
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            sock.close(0)
            self._local.sock = None

    # -- calls ---------------------------------------------------------------
    def call(
        self,
        method: str,
        kwargs: dict[str, Any] | None = None,
        *,
        routing_key: bytes | None = None,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request and wait for its reply; raise the server's error as a FederationError."""
        if self._closed:
            raise TransportError("client is closed")
        kwargs = kwargs or {}
        req_id = next(self._ids)
        frames = request_frames(req_id, method, kwargs, {**self.meta, **(meta or {})}, routing_key)
        sock = self._socket()
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        if "," in self.endpoint and not sock.poll(max(1, int(wait * 1000)), zmq.POLLOUT):
            # a list of routers (ZMQ_IMMEDIATE): none has a completed connection (none leads yet)
            self._drop_socket()
            raise RequestTimeout(f"no router of {self.endpoint} accepted {method} within {wait:g} s")
        try:
            sock.send_multipart(frames, copy=False)
        except zmq.ZMQError as e:
            self._drop_socket()
            raise TransportError(f"cannot send {method} to {self.endpoint}: {e}") from e
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sock.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                self._drop_socket()
                raise RequestTimeout(f"no reply to {method} from {self.endpoint} within {wait:g} s")
            reply = read_reply(sock.recv_multipart())
            if reply is None or reply.req_id != req_id:
                continue  # undecodable, or a late reply to an earlier request on this socket
            return reply_result(reply)

    def close(self) -> None:
        self._closed = True
        self._drop_socket()
        if self._ctx is not None and self._pid == os.getpid():
            self._ctx.destroy(linger=0)
            self._ctx = None


class AsyncZmqClient:
    """Request/reply over one asyncio DEALER, for callers on one event loop (the HTTP gateway).

    Requests carry unique ids; one reader task hands each reply to the waiting caller, so any
    number of calls are in flight at once without a thread per call.  A call that times out is
    forgotten: its late reply, if any, is dropped.  Use it from the loop it was first called on;
    :meth:`close` there too.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        meta: dict[str, Any] | None = None,
        curve: Any = None,
    ) -> None:
        _check_endpoint(endpoint)
        self.endpoint = endpoint
        self.timeout = timeout
        self.meta = dict(meta or {})
        #: a federation.keys.ClientCurve: this client's keys and the server's public key
        self.curve = curve
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[wire.Reply]] = {}
        self._ids = itertools.count(1)

    def _socket(self) -> Any:
        if self._reader is not None and self._reader.done():
            self.close()  # the reader died (logged): start over with a new socket
        if self._sock is None:
            self._ctx = zmq.asyncio.Context()
            self._sock = connect_any(self._ctx, self.endpoint, curve=self.curve)
            self._reader = asyncio.get_running_loop().create_task(self._read())
        return self._sock

    async def _read(self) -> None:
        sock = self._sock
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError as e:
                _log.error("reading replies from %s failed: %s", self.endpoint, e)
                return
            reply = read_reply(frames)
            if reply is None:
                _log.warning("undecodable reply from %s dropped", self.endpoint)
                continue
            fut = self._pending.pop(reply.req_id, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    async def call(
        self,
        method: str,
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request and await its reply; raise the server's error as a FederationError."""
        kwargs = kwargs or {}
        sock = self._socket()
        req_id = next(self._ids)
        frames = request_frames(req_id, method, kwargs, {**self.meta, **meta} if meta else self.meta)
        fut: asyncio.Future[wire.Reply] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        wait = self.timeout if timeout is None else timeout
        try:
            # (a list of routers with none leading: the send waits, within the call's time)
            await asyncio.wait_for(sock.send_multipart(frames), wait)
            reply = await asyncio.wait_for(fut, wait)
        except TimeoutError:
            raise RequestTimeout(f"no reply to {method} from {self.endpoint} within {wait:g} s") from None
        except zmq.ZMQError as e:
            raise TransportError(f"cannot send {method} to {self.endpoint}: {e}") from e
        finally:
            self._pending.pop(req_id, None)
        return reply_result(reply)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
