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
import json
import logging
import os
import threading
from typing import Any

import luigi
import tornado.httpserver
import tornado.netutil
import tornado.web

from federation.errors import FederationError
from federation.transport import AsyncZmqClient
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


class RPCHandler(tornado.web.RequestHandler):
    def initialize(self, backend: AsyncZmqClient) -> None:
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
    backend = AsyncZmqClient(router_endpoint, timeout=timeout, meta={"client": "http-gateway"})
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
