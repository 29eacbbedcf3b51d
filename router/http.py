"""Luigi's HTTP API and web visualiser in front of the federation (a drop-in for ``luigid``).

Routes, as ``luigi/server.py`` serves them:

* ``/api/<method>`` — GET or POST, the arguments as JSON in the ``data``
  field (query string or form body); a missing *or empty* ``data`` means
  ``{}`` (Luigi's own UI sends ``data=`` for ``pause``).  The answer is
  ``{"response": <result>}``.  Unknown methods get 404; undecodable JSON or
  arguments that do not fit the method get 400; an unavailable shard 503,
  which Luigi's client retries like any HTTP error.  Error bodies are JSON:
  ``{"error": {"code": ..., "message": ...}}``.
* ``HEAD /`` — 204, the health check; ``GET /`` — redirect to the visualiser.
* ``/static/...`` — Luigi's visualiser from the installed ``luigi`` package.

Each API call goes to the router's ZeroMQ front over one asyncio DEALER
socket on the gateway's own event loop (no thread per call), so the loop
never waits for a shard and any number of calls are in flight at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import threading
from typing import Any

import luigi
import tornado.httpserver
import tornado.netutil
import tornado.web
import zmq
import zmq.asyncio

from federation import transport, wire
from federation.errors import FederationError, ProtocolError, RequestTimeout, TransportError, error_from_wire
from router.methods import LUIGI_METHODS

log = logging.getLogger("router.http")

STATIC_PATH = os.path.join(os.path.dirname(luigi.__file__), "static")
#: methods served under /api/ besides Luigi's own
EXTRA_METHODS = frozenset({"federation_health"})
_CLIENT_ERRORS = {"bad_request", "bad_arguments", "bad_msgpack", "bad_frames", "too_large"}
_UNAVAILABLE = {"unavailable", "timeout", "storage", "shard_locked"}


def status_for(err: FederationError) -> int:
    """The HTTP status of an error reply."""
    if err.code == "unknown_method":
        return 404
    if err.code in _CLIENT_ERRORS:
        return 400
    if err.code in _UNAVAILABLE:
        return 503
    return 500


class _Backend:
    """Calls to the router over one asyncio ZeroMQ DEALER, on the gateway's own event loop.

    Requests carry unique ids; one reader task hands each reply to the waiting handler, so any
    number of HTTP requests are in flight at once without a thread per call.  A request that
    times out is forgotten: its late reply, if any, is dropped.
    """

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.meta = {"client": "http-gateway"}
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
            self._sock = transport.connect_dealer(self._ctx, self.endpoint)
            self._reader = asyncio.get_running_loop().create_task(self._read())
        return self._sock

    async def _read(self) -> None:
        sock = self._sock
        while True:
            try:
                frames = await sock.recv_multipart()
            except zmq.ZMQError as e:
                log.error("http gateway: reading the router's replies failed: %s", e)
                return
            try:
                reply = wire.decode_reply(frames[-1])
            except ProtocolError:
                log.warning("http gateway: undecodable reply from the router dropped")
                continue
            fut = self._pending.pop(reply.req_id, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    async def call(self, method: str, kwargs: dict[str, Any]) -> Any:
        sock = self._socket()
        req_id = next(self._ids)
        body = wire.encode_request(req_id, method, kwargs, self.meta)
        fut: asyncio.Future[wire.Reply] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            await sock.send_multipart([wire.routing_key(kwargs), body])
            reply = await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise RequestTimeout(
                f"no reply to {method} from {self.endpoint} within {self.timeout:g} s"
            ) from None
        except zmq.ZMQError as e:
            raise TransportError(f"cannot send {method} to {self.endpoint}: {e}") from e
        finally:
            self._pending.pop(req_id, None)
        if reply.ok:
            return reply.result
        raise error_from_wire(reply.error)

    def close(self) -> None:
        """Run on the gateway's loop (its sockets belong to it)."""
        if self._reader is not None:
            self._reader.cancel()
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


class RPCHandler(tornado.web.RequestHandler):
    def initialize(self, backend: _Backend) -> None:
        self.backend = backend

    def _error(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": {"code": code, "message": message}}))

    async def get(self, method: str) -> None:
        if method not in LUIGI_METHODS and method not in EXTRA_METHODS:
            self._error(404, "unknown_method", f"unknown method {method!r}")
            return
        raw = self.get_argument("data", default=None)
        if raw is None or not raw.strip():
            arguments: Any = {}
        else:
            try:
                arguments = json.loads(raw)
            except ValueError as e:
                self._error(400, "bad_request", f"data is not valid JSON: {e}")
                return
        if not isinstance(arguments, dict):
            self._error(400, "bad_request", "data must be a JSON object of argument names to values")
            return
        try:
            result = await self.backend.call(method, arguments)
        except FederationError as e:
            self._error(status_for(e), e.code, e.message)
            return
        try:
            self.write({"response": result})
        except (TypeError, ValueError) as e:
            self._error(500, "internal", f"cannot encode the answer as JSON: {e}")

    post = get


class RootHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        # relative, like luigid, so a reverse proxy under a sub-path keeps working
        self.redirect("static/visualiser/index.html")

    def head(self) -> None:
        self.set_status(204)
        self.finish()


class MetricsHandler(tornado.web.RequestHandler):
    """Prometheus text exposition of the router's registry (luigid serves /metrics too)."""

    def initialize(self, registry: Any) -> None:
        self.registry = registry

    def get(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))


def make_app(
    router_endpoint: str, *, timeout: float = 30.0, metrics_registry: Any = None
) -> tornado.web.Application:
    """The tornado application; ``app.settings["backend"].close()`` (on its loop) releases its socket."""
    backend = _Backend(router_endpoint, timeout)
    routes: list[Any] = [
        (r"/api/(.*)", RPCHandler, {"backend": backend}),
        (r"/", RootHandler),
    ]
    if metrics_registry is not None:
        routes.append((r"/metrics", MetricsHandler, {"registry": metrics_registry}))
    app = tornado.web.Application(
        routes,
        static_path=STATIC_PATH,
        compress_response=True,
        backend=backend,
    )
    return app


class Gateway:
    """The HTTP gateway on its own thread and event loop."""

    def __init__(
        self, router_endpoint: str, bind: str, *, timeout: float = 30.0, metrics_registry: Any = None
    ) -> None:
        self.metrics_registry = metrics_registry
        host, _, port = bind.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.router_endpoint = router_endpoint
        self.timeout = timeout
        self.address = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="http-gateway", daemon=True)

    def start(self) -> Gateway:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to start() or logged; the thread must not die silently
            if not self._ready.is_set():
                self._error = e
                self._ready.set()
            else:
                log.error("http gateway stopped with an error", exc_info=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        app = make_app(self.router_endpoint, timeout=self.timeout, metrics_registry=self.metrics_registry)
        try:
            sockets = tornado.netutil.bind_sockets(self.port, address=self.host)
        except OSError as e:
            from federation.errors import TransportError

            raise TransportError(f"cannot bind HTTP {self.host}:{self.port}: {e.strerror or e}") from e
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        self.address = f"{self.host}:{sockets[0].getsockname()[1]}"
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.stop()
            await server.close_all_connections()
            app.settings["backend"].close()

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:
                pass  # the loop is already closed
        self._thread.join(timeout=5)


def start_gateway(
    router_endpoint: str, bind: str, *, timeout: float = 30.0, router_obj: Any = None
) -> Gateway:
    """Bind ``host:port`` (port 0 picks a free one) and serve; ``.address`` is the bound ``host:port``."""
    # one line per request at INFO would drown the router's own log; keep tornado's errors
    access = logging.getLogger("tornado.access")
    if access.level == logging.NOTSET:
        access.setLevel(logging.WARNING)
    registry = None
    if router_obj is not None:
        # leave the router time to answer with its own "unavailable" before the gateway gives up
        timeout = max(timeout, 2 * getattr(router_obj, "timeout", 5.0) + 5)
        registry = router_obj.metrics.registry
    return Gateway(router_endpoint, bind, timeout=timeout, metrics_registry=registry).start()
