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

Limits, so that no client can take the router's process down: a body above
``max_body_bytes`` (the federation's ``max_message_bytes``) is refused with 413
from its ``Content-Length`` before it is read; JSON nested too deeply for the
wire is a 400; at most ``max_connections`` connections are open at once (the
next ones get a 503 and are closed, logged at most once per
``REFUSAL_LOG_INTERVAL``); a connection that sends no complete request headers
within ``header_timeout`` seconds, or stays idle that long, is closed.

Each API call goes to the router's ZeroMQ front over one asyncio DEALER
socket on the gateway's own event loop (no thread per call), so the loop
never waits for a shard and any number of calls are in flight at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import threading
import time
from typing import Any

import luigi
import tornado.httpserver
import tornado.httputil
import tornado.iostream
import tornado.netutil
import tornado.web

from federation import wire
from federation.auth import ASSERT_META, Authorizer, Principal
from federation.errors import FederationError
from federation.transport import AsyncZmqClient
from router.methods import LUIGI_METHODS

log = logging.getLogger("router.http")

STATIC_PATH = os.path.join(os.path.dirname(luigi.__file__), "static")
#: methods served under /api/ besides Luigi's own
EXTRA_METHODS = frozenset({"federation_health"})
_CLIENT_ERRORS = {"bad_request", "bad_arguments", "bad_msgpack", "bad_frames"}
#: defaults of the limits (module docstring); the body limit is the federation's max_message_bytes
MAX_CONNECTIONS = 512
HEADER_TIMEOUT = 30.0
BODY_TIMEOUT = 60.0
REFUSAL_LOG_INTERVAL = 30.0
_UNAVAILABLE = {"unavailable", "timeout", "storage", "shard_locked"}


#: the realm of the browser's Basic prompt (the visualiser asks for a token there)
REALM = "luigi-federation"


def status_for(err: FederationError) -> int:
    """The HTTP status of an error reply."""
    if err.code == "unauthenticated":
        return 401
    if err.code == "forbidden":
        return 403
    if err.code == "unknown_method":
        return 404
    if err.code in _CLIENT_ERRORS:
        return 400
    if err.code == "too_large":
        return 413
    if err.code in _UNAVAILABLE:
        return 503
    return 500


def presented_token(header: str | None) -> str | None:
    """The token of an ``Authorization`` header: ``Bearer TOKEN``, or HTTP Basic with the token as
    the password (the user part is ignored: Luigi sends ``http://worker:TOKEN@host:8082``'s)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, colon, password = decoded.partition(":")
        return (password if colon else user) or None
    return None


class Guarded(tornado.web.RequestHandler):
    """A handler that, on a secured gateway (``authz`` set), serves only a known token's holder."""

    authz: Authorizer | None = None

    def _error(self, status: int, code: str, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        if status == 401:
            self.set_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        self.finish(json.dumps({"error": {"code": code, "message": message}}))

    def principal(self) -> Principal | None:
        """The caller, or None after answering 401 (no token, or a token nobody holds)."""
        assert self.authz is not None
        token = presented_token(self.request.headers.get("Authorization"))
        found = self.authz.principal_of_token(token) if token else None
        if found is None:
            self._error(
                401,
                "unauthenticated",
                "a token is required: HTTP Basic with the token as password "
                "(http://USER:TOKEN@host:port) or Authorization: Bearer TOKEN"
                if token is None
                else "unknown token",
            )
        return found


@tornado.web.stream_request_body
class RPCHandler(Guarded):
    """``/api/<method>``; the body is streamed in so that an oversized one is refused unread."""

    def initialize(
        self, backend: AsyncZmqClient, max_body_bytes: int, authz: Authorizer | None = None
    ) -> None:
        self.backend = backend
        self.max_body_bytes = max_body_bytes
        self.authz = authz
        self._chunks: list[bytes] = []
        self._size = 0

    def _too_large(self, size: int | str) -> None:
        if self._finished:
            return
        self.set_header("Connection", "close")
        self._error(
            413, "too_large", f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes"
        )

    def prepare(self) -> None:
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            self._too_large(length)  # before a byte of it is read
        # a body without Content-Length (chunked) is counted in data_received; tornado's own cap
        # (the server's max_body_size, twice ours) answers only 400, so ours must come first

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._size += len(chunk)
        if self._size > self.max_body_bytes:
            self._too_large(f"more than {self.max_body_bytes}")
            return
        self._chunks.append(chunk)

    async def get(self, method: str) -> None:
        if self._finished:
            return
        meta: dict[str, Any] | None = None
        if self.authz is not None:
            who = self.principal()
            if who is None:
                return
            meta = {ASSERT_META: who.name}
        if method not in LUIGI_METHODS and method not in EXTRA_METHODS:
            self._error(404, "unknown_method", f"unknown method {method!r}")
            return
        if self._chunks:
            self.request.body = b"".join(self._chunks)
            tornado.httputil.parse_body_arguments(
                self.request.headers.get("Content-Type", ""),
                self.request.body,
                self.request.body_arguments,
                self.request.files,
                self.request.headers,
            )
            for name, values in self.request.body_arguments.items():
                self.request.arguments.setdefault(name, []).extend(values)
        raw = self.get_argument("data", default=None)
        if raw is None or not raw.strip():
            arguments: Any = {}
        else:
            try:
                arguments = json.loads(raw)
            except (ValueError, RecursionError) as e:
                reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
                self._error(400, "bad_request", f"data is not valid JSON: {reason}")
                return
        if not isinstance(arguments, dict):
            self._error(400, "bad_request", "data must be a JSON object of argument names to values")
            return
        try:
            result = await self.backend.call(method, arguments, meta=meta)
        except FederationError as e:
            self._error(status_for(e), e.code, e.message)
            return
        except (ValueError, TypeError, RecursionError) as e:  # arguments the wire cannot carry
            self._error(400, "bad_request", f"arguments cannot be sent: {type(e).__name__}: {e}"[:500])
            return
        try:
            self.write({"response": result})
        except (TypeError, ValueError) as e:
            self._error(500, "internal", f"cannot encode the answer as JSON: {e}")

    post = get


class RootHandler(Guarded):
    def initialize(self, authz: Authorizer | None = None) -> None:
        self.authz = authz

    def get(self) -> None:
        if self.authz is not None and self.principal() is None:
            return
        # relative, like luigid, so a reverse proxy under a sub-path keeps working
        self.redirect("static/visualiser/index.html")

    def head(self) -> None:
        self.set_status(204)
        self.finish()


class StaticHandler(tornado.web.StaticFileHandler):
    """Luigi's visualiser files; a path no file system can hold (a NUL byte) is a 404, not a 500.
    On a secured gateway they too need a token, so that a browser asks for it (Basic prompt) on
    the first page and sends it with every API call of the visualiser after."""

    authz: Authorizer | None = None

    def initialize(  # type: ignore[override]
        self, path: str, default_filename: str | None = None, authz: Authorizer | None = None
    ) -> None:
        super().initialize(path, default_filename)
        self.authz = authz

    def prepare(self) -> None:
        if self.authz is None:
            return
        token = presented_token(self.request.headers.get("Authorization"))
        if token is None or self.authz.principal_of_token(token) is None:
            Guarded._error(self, 401, "unauthenticated", "a token is required (HTTP Basic, password = token)")  # type: ignore[arg-type]

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if "\x00" in absolute_path:
            raise tornado.web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        if "\x00" in path:
            raise tornado.web.HTTPError(404)
        return super().get_absolute_path(root, path)


class CappedHTTPServer(tornado.httpserver.HTTPServer):
    """tornado's server with a cap on open connections (the router's file descriptors are shared
    with its ZeroMQ sockets: idle HTTP clients must not be able to use them all up)."""

    max_connections = MAX_CONNECTIONS
    _last_refusal_log = 0.0
    refused = 0

    def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL:
                self._last_refusal_log = now
                log.warning(
                    "http gateway: %d connections open (the limit); refusing new ones (%d so far)",
                    len(self._connections),
                    self.refused,
                )
            body = b'{"error": {"code": "unavailable", "message": "too many connections"}}'
            head = (
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            )
            try:
                stream.write(head + body).add_done_callback(lambda _f: stream.close())
            except tornado.iostream.StreamClosedError:
                pass
            return
        super().handle_stream(stream, address)


class MetricsHandler(Guarded):
    """Prometheus text exposition of the router's registry (luigid serves /metrics too); with
    ``[security] metrics_auth`` only for a token's holder (Prometheus: ``authorization``/``basic_auth``)."""

    def initialize(self, registry: Any, authz: Authorizer | None = None) -> None:
        self.registry = registry
        self.authz = authz

    def get(self) -> None:
        if self.authz is not None and self.principal() is None:
            return
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(self.registry))


def make_app(
    router_endpoint: str,
    *,
    timeout: float = 30.0,
    metrics_registry: Any = None,
    max_body_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
    curve: Any = None,
    authz: Authorizer | None = None,
    metrics_auth: bool = False,
) -> tornado.web.Application:
    """The tornado application; ``app.settings["backend"].close()`` (on its loop) releases its socket.

    ``curve`` (a :class:`federation.keys.ClientCurve`) and ``authz``: a secured gateway, which serves
    only token holders and passes each one's principal to the router (docs/security.md)."""
    backend = AsyncZmqClient(router_endpoint, timeout=timeout, meta={"client": "http-gateway"}, curve=curve)
    routes: list[Any] = [
        (r"/api/(.*)", RPCHandler, {"backend": backend, "max_body_bytes": max_body_bytes, "authz": authz}),
        (r"/", RootHandler, {"authz": authz}),
    ]
    if metrics_registry is not None:
        routes.append(
            (
                r"/metrics",
                MetricsHandler,
                {"registry": metrics_registry, "authz": authz if metrics_auth else None},
            )
        )
    app = tornado.web.Application(
        routes,
        static_path=STATIC_PATH,
        static_handler_class=StaticHandler,
        static_handler_args={"authz": authz},
        compress_response=True,
        backend=backend,
    )
    return app


class Gateway:
    """The HTTP gateway on its own thread and event loop."""

    def __init__(
        self,
        router_endpoint: str,
        bind: str,
        *,
        timeout: float = 30.0,
        metrics_registry: Any = None,
        max_body_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = HEADER_TIMEOUT,
        security: Any = None,
        authz: Authorizer | None = None,
    ) -> None:
        self.security = security
        self.authz = authz
        self.metrics_registry = metrics_registry
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.server: CappedHTTPServer | None = None
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
        curve = None
        ssl_options: Any = None
        sec = self.security
        if sec is not None:
            from federation.keys import gateway_curve

            curve = gateway_curve(sec)
            if sec.http_tls_cert:
                import ssl

                ssl_options = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                try:
                    ssl_options.load_cert_chain(sec.http_tls_cert, sec.http_tls_key)
                except (OSError, ssl.SSLError) as e:
                    from federation.errors import ConfigError

                    raise ConfigError(f"[security] http_tls_cert/http_tls_key: cannot load: {e}") from None
        app = make_app(
            self.router_endpoint,
            timeout=self.timeout,
            metrics_registry=self.metrics_registry,
            max_body_bytes=self.max_body_bytes,
            curve=curve,
            authz=self.authz if sec is not None else None,
            metrics_auth=bool(sec is not None and sec.metrics_auth),
        )
        try:
            sockets = tornado.netutil.bind_sockets(self.port, address=self.host)
        except OSError as e:
            from federation.errors import TransportError

            raise TransportError(f"cannot bind HTTP {self.host}:{self.port}: {e.strerror or e}") from e
        # idle_connection_timeout is also tornado's header timeout (HTTP1ConnectionParameters)
        server = CappedHTTPServer(
            app,
            idle_connection_timeout=self.header_timeout,
            body_timeout=BODY_TIMEOUT,
            max_body_size=2 * self.max_body_bytes,
            ssl_options=ssl_options,
        )
        server.max_connections = self.max_connections
        self.server = server
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
    router_endpoint: str,
    bind: str,
    *,
    timeout: float = 30.0,
    router_obj: Any = None,
    max_body_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
    max_connections: int = MAX_CONNECTIONS,
    header_timeout: float = HEADER_TIMEOUT,
    security: Any = None,
) -> Gateway:
    """Bind ``host:port`` (port 0 picks a free one) and serve; ``.address`` is the bound ``host:port``."""
    # one line per request at INFO would drown the router's own log; keep tornado's errors
    access = logging.getLogger("tornado.access")
    if access.level == logging.NOTSET:
        access.setLevel(logging.WARNING)
    registry = None
    authz = None
    if security is not None:
        authz = getattr(getattr(router_obj, "core", None), "authz", None)
        if authz is None:
            raise ValueError("a secured gateway needs the router's authorizer (router_obj)")
    if router_obj is not None:
        # leave the router time to answer with its own "unavailable" before the gateway gives up
        timeout = max(timeout, 2 * getattr(router_obj, "timeout", 5.0) + 5)
        registry = router_obj.metrics.registry
    return Gateway(
        router_endpoint,
        bind,
        timeout=timeout,
        metrics_registry=registry,
        max_body_bytes=max_body_bytes,
        max_connections=max_connections,
        header_timeout=header_timeout,
        security=security,
        authz=authz,
    ).start()
