"""Credentials for a secured federation: ``fedctl up --secure`` and ``fedctl keys``.

:func:`provision` writes, under ``<data_dir>/keys``, the servers' keypairs (router, shards,
HTTP gateway) and one keypair plus one HTTP token per principal, and returns the
``[security]``/``[[principals]]`` tables that name them.  Existing keys and tokens are kept
(a restart of ``fedctl up --secure`` on the same data directory uses the same credentials).
Secret files are 0600 in a 0700 folder; ``federation.toml`` holds only public key file names
and token hashes.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.auth import ADMIN, VIEWER, WORKER, hash_token
from federation.errors import ConfigError

#: the principals ``fedctl up --secure`` creates: name, role, namespaces
LOCAL_PRINCIPALS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("admin", ADMIN, ("*",)),
    ("worker", WORKER, ("*",)),
    ("viewer", VIEWER, ("*",)),
)
SERVER_KEYS = ("router", "shard", "gateway")


@dataclass(frozen=True)
class Provisioned:
    keys_dir: Path
    security: dict[str, Any]
    principals: list[dict[str, Any]]
    #: principal -> its HTTP token (read from ``keys/<name>.token``)
    tokens: dict[str, str]

    def key(self, name: str) -> str:
        """A principal's (or server's) secret key file."""
        return str(self.keys_dir / f"{name}.key_secret")

    def public(self, name: str) -> str:
        return str(self.keys_dir / f"{name}.key")


def _keypair(folder: Path, name: str) -> None:
    from federation.keys import new_keypair

    if (folder / f"{name}.key").exists() and (folder / f"{name}.key_secret").exists():
        return
    new_keypair(folder, name)


def _token(folder: Path, name: str) -> str:
    path = folder / f"{name}.token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def provision(
    data_dir: str | os.PathLike[str],
    principals: Iterable[tuple[str, str, tuple[str, ...]]] = LOCAL_PRINCIPALS,
) -> Provisioned:
    """Keys and tokens for a federation under ``data_dir/keys`` (see the module docstring)."""
    folder = Path(data_dir).resolve() / "keys"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    except OSError as e:
        raise ConfigError(f"cannot create {folder}: {e.strerror or e}") from None
    for name in SERVER_KEYS:
        _keypair(folder, name)
    entries: list[dict[str, Any]] = []
    tokens: dict[str, str] = {}
    for name, role, namespaces in principals:
        if name in SERVER_KEYS:
            raise ConfigError(f"principal name {name!r} is taken by a server key")
        _keypair(folder, name)
        tokens[name] = _token(folder, name)
        entries.append(
            {
                "name": name,
                "role": role,
                "namespaces": list(namespaces),
                "key": str(folder / f"{name}.key"),
                "token_sha256": hash_token(tokens[name]),
            }
        )
    security = {
        "router_key": str(folder / "router.key"),
        "shard_key": str(folder / "shard.key"),
        "gateway_key": str(folder / "gateway.key"),
    }
    return Provisioned(folder, security, entries, tokens)


def client_curve(key: str | None, server_key: str | None = None) -> Any:
    """The :class:`federation.keys.ClientCurve` of ``--key``/``--server-key`` (None without ``--key``)."""
    if not key:
        if server_key:
            raise ConfigError("--server-key needs --key (FED_KEY): the client's own key file")
        return None
    from federation.keys import ClientCurve

    return ClientCurve.from_files(key, server_key)


_LOOPBACK_HOSTS = ("localhost", "::1", "[::1]", "ip6-localhost")


def is_loopback(address: str) -> bool:
    """A ZeroMQ endpoint or ``host:port`` that only this host can reach (ipc/inproc count)."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    hostport = address.split("://", 1)[-1]
    host = hostport.rpartition(":")[0] if ":" in hostport else hostport
    host = host.strip("[]")
    return host.startswith("127.") or host in _LOOPBACK_HOSTS or host == "::1"


def refuse_open_binds(binds: Iterable[tuple[str, str]], *, secured: bool, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without ``[security]`` unless ``--insecure``."""
    if secured or insecure:
        return
    for what, address in binds:
        if address and not is_loopback(address):
            raise ConfigError(
                f"{what} {address} is reachable from other hosts and federation.toml has no [security]: "
                "anyone who reaches it could change every task; configure [security] "
                "(fedctl up --secure, docs/security.md) or pass --insecure"
            )


def supervisor_curves(security: Any) -> tuple[Any, Any]:
    """``(to the shards, to the router)`` CURVE clients with an admin principal's key whose secret is on
    this host (``fedctl up`` checks its children with it), or ``(None, None)`` when unsecured."""
    if security is None:
        return None, None
    from federation.keys import ClientCurve, load_pair, load_public

    for _name, public_file in security.admin_keys():
        if os.path.exists(public_file + "_secret"):
            public, secret = load_pair(public_file)
            return (
                ClientCurve(public, secret, load_public(security.shard_key)),
                ClientCurve(public, secret, load_public(security.router_key)),
            )
    raise ConfigError(
        "a secured federation.toml needs, for fedctl up, an admin principal whose secret key "
        "(<key>_secret) is on this host"
    )


def banner_lines(cfg: Any, *, stays_up: bool = True) -> list[str]:
    """What ``fedctl up --secure`` tells about its credentials: where they are, never what they are."""
    sec = cfg.security
    keys_dir = os.path.dirname(sec.router_key)
    lines = [f"  secured: CURVE on every ZeroMQ link, HTTP tokens; keys and tokens in {keys_dir} (0600)"]
    for p in sec.principals:
        creds = []
        if p.key:
            creds.append(f"--key {p.key}_secret")
        token_file = os.path.join(keys_dir, f"{p.name}.token")
        if p.token_sha256 and os.path.exists(token_file):
            creds.append(f"HTTP token in {token_file}")
        lines.append(f"  {p.role:<8} {p.name:<10} {'; '.join(creds)}")
    if cfg.router.http:
        lines.append(
            f"  luigi.cfg [core] scheduler_url = http://worker:$(cat {keys_dir}/worker.token)@{cfg.router.http}"
        )
    if stays_up:
        lines.append(f"  fedctl tui --router {cfg.router.zmq} --key {keys_dir}/viewer.key_secret --readonly")
    return lines
