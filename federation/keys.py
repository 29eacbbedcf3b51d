"""CURVE keypair files and the ZAP gatekeeper (ZeroMQ's libsodium via pyzmq's ``zmq.auth``).

Key files are ``zmq.auth.create_certificates``'s: ``NAME.key`` holds the public key,
``NAME.key_secret`` both halves (mode 0600).  ``federation.toml`` names the public file; the
process that owns the key reads ``<file>_secret``.  A :class:`ClientCurve` is what a client
needs (its own pair and the server's public key), :class:`ServerCurve` what a server binds with
(its pair and the public keys it admits, each mapped to a principal name, which ZAP hands to
every message as its ``User-Id``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from federation.errors import ConfigError

log = logging.getLogger("federation.keys")

#: a peer refused by ZAP is logged at most once per key per this many seconds
DENIAL_LOG_INTERVAL = 60.0
SECRET_SUFFIX = "_secret"


def new_keypair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (0600) into ``directory``; refuse to overwrite."""
    if not name or any(c in name for c in "/\\\0") or name.startswith("."):
        raise ConfigError(f"{name!r} is not a usable key name")
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key{SECRET_SUFFIX}"
    if public.exists() or secret.exists():
        raise ConfigError(f"{public} already exists: keys are never overwritten (remove it first)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        old = os.umask(0o077)
        try:
            pub, sec = zmq.auth.create_certificates(str(folder), name)
        finally:
            os.umask(old)
        os.chmod(sec, 0o600)
        os.chmod(pub, 0o644)
    except OSError as e:
        raise ConfigError(f"cannot write keys into {folder}: {e.strerror or e}") from None
    return Path(pub), Path(sec)


def _public_path(path: str) -> str:
    return path[: -len(SECRET_SUFFIX)] if path.endswith(SECRET_SUFFIX) else path


def load_public(path: str) -> bytes:
    """The Z85 public key of a key file (either half)."""
    try:
        public, _ = zmq.auth.load_certificate(_public_path(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the public key: {e}", source=path) from None
    if not public:
        raise ConfigError("no public key in it", source=path)
    return public


def load_pair(path: str) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys of a keypair, from its public file or its ``_secret`` file."""
    secret_path = path if path.endswith(SECRET_SUFFIX) else path + SECRET_SUFFIX
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and not os.path.exists(secret_path):
        # a systemd credential (LoadCredential=NAME.key_secret:...), as fedctl deploy render sets it up
        candidate = os.path.join(creds, os.path.basename(secret_path))
        if os.path.exists(candidate):
            secret_path = candidate
    try:
        public, secret = zmq.auth.load_certificate(secret_path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the secret key: {e}", source=secret_path) from None
    if not public or not secret:
        raise ConfigError("not a secret key file (zmq.auth format)", source=secret_path)
    return public, secret


@dataclass(frozen=True, slots=True)
class ClientCurve:
    """A CURVE client: its own keypair and the public key of the server it talks to."""

    public: bytes
    secret: bytes = field(repr=False)
    server: bytes

    @classmethod
    def from_files(cls, key: str, server_key: str | None = None) -> ClientCurve:
        """``key``: the client's key file; ``server_key``: the server's public key file, by default
        ``router.key`` in the folder of ``key`` (where ``fedctl up --secure`` puts both)."""
        public, secret = load_pair(key)
        server_path = server_key or os.path.join(os.path.dirname(os.path.abspath(key)), "router.key")
        return cls(public, secret, load_public(server_path))

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server


class Gatekeeper(ThreadAuthenticator):
    """ZAP handler: admits the listed public keys; each message's ``User-Id`` is its principal."""

    def __init__(self, ctx: zmq.Context, clients: Mapping[bytes, str]) -> None:
        super().__init__(ctx, log=logging.getLogger("federation.keys.zap"))
        self.clients = dict(clients)
        self._refusal_log: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.clients:
            return True
        with self._lock:
            self.refused += 1
            now = time.monotonic()
            if now - self._refusal_log.get(key, -DENIAL_LOG_INTERVAL) >= DENIAL_LOG_INTERVAL:
                self._refusal_log[key] = now
                if len(self._refusal_log) > 10_000:
                    self._refusal_log.clear()
                log.warning(
                    "refused a ZeroMQ peer with an unknown CURVE key %s... (%d refused so far)",
                    key[:8].decode("ascii", "replace"),
                    self.refused,
                )
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        from zmq.utils import z85

        return self.clients.get(z85.encode(client_public_key), "")


@dataclass(frozen=True, slots=True)
class ServerCurve:
    """A CURVE server: its keypair and the admitted clients' public keys -> principal names."""

    public: bytes
    secret: bytes = field(repr=False)
    clients: Mapping[bytes, str]

    def start(self, ctx: zmq.Context) -> Gatekeeper:
        """Start the ZAP handler on ``ctx`` (before a socket of it binds)."""
        gate = Gatekeeper(ctx, self.clients)
        gate.start()
        gate.configure_curve_callback(domain="*", credentials_provider=gate)
        return gate

    def apply(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def watch(self, sock: zmq.Socket) -> threading.Thread:
        """Log peers that fail the handshake without a CURVE key (plaintext ones, which never
        reach the ZAP handler): at most once per endpoint per ``DENIAL_LOG_INTERVAL``."""
        return watch_handshakes(sock)


#: handshake failures of peers that never reach ZAP (no CURVE, another mechanism, junk)
_PLAIN_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


def watch_handshakes(sock: zmq.Socket) -> threading.Thread:
    """A daemon thread reading ``sock``'s monitor: a peer refused before ZAP (plaintext) is logged,
    rate-limited; the thread ends with the socket (its monitor stops)."""
    from zmq.utils.monitor import recv_monitor_message

    monitor = sock.get_monitor_socket(_PLAIN_FAILURES | zmq.EVENT_MONITOR_STOPPED)
    last: dict[bytes, float] = {}
    counts: dict[bytes, int] = {}

    def run() -> None:
        try:
            while True:
                event = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                endpoint = event.get("endpoint") or b""
                counts[endpoint] = counts.get(endpoint, 0) + 1
                now = time.monotonic()
                if now - last.get(endpoint, -DENIAL_LOG_INTERVAL) >= DENIAL_LOG_INTERVAL:
                    last[endpoint] = now
                    log.warning(
                        "refused a ZeroMQ peer without a valid CURVE handshake on %s "
                        "(plaintext or another mechanism; %d refused so far)",
                        endpoint.decode("utf-8", "replace"),
                        counts[endpoint],
                    )
        except zmq.ZMQError:
            return  # the context is terminating
        finally:
            monitor.close(0)

    thread = threading.Thread(target=run, name="zmq-handshake-watch", daemon=True)
    thread.start()
    return thread


def server_curve(own_key: str, clients: Mapping[str, str]) -> ServerCurve:
    """A server's :class:`ServerCurve` from files: ``own_key`` and ``{principal: public key file}``."""
    public, secret = load_pair(own_key)
    return ServerCurve(public, secret, {load_public(path): name for name, path in clients.items()})


def user_id(frame: Any) -> str | None:
    """The principal ZAP gave the message of ``frame`` (a ``zmq.Frame``), or None."""
    try:
        value = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return value or None


def describe(curve: Any) -> str:
    """Never a key: what a log line may say about a CURVE setting."""
    return "CURVE" if curve is not None else "plaintext"


# -- the federation's links, from [security] (federation.secconfig.SecurityConfig) ---------------------
def shard_curve(security: Any) -> ServerCurve:
    """A shard's socket: the shards' keypair; the router and the admin principals admitted."""
    from federation.auth import ROUTER_PRINCIPAL

    clients = {ROUTER_PRINCIPAL: security.router_key, **dict(security.admin_keys())}
    return server_curve(security.shard_key, clients)


def router_front_curve(security: Any) -> ServerCurve:
    """The router's front: the router's keypair; every principal with a key, and the gateway."""
    from federation.auth import GATEWAY_PRINCIPAL

    clients = {p.name: p.key for p in security.principals if p.key}
    if security.gateway_key:
        clients[GATEWAY_PRINCIPAL] = security.gateway_key
    return server_curve(security.router_key, clients)


def router_to_shards_curve(security: Any) -> ClientCurve:
    """The router's DEALERs to the shards: the router's keypair, the shards' public key."""
    public, secret = load_pair(security.router_key)
    return ClientCurve(public, secret, load_public(security.shard_key))


def gateway_curve(security: Any) -> ClientCurve:
    """The HTTP gateway's DEALER to the router front."""
    if not security.gateway_key:
        raise ConfigError("[security] gateway_key: required when the router serves HTTP")
    public, secret = load_pair(security.gateway_key)
    return ClientCurve(public, secret, load_public(security.router_key))
