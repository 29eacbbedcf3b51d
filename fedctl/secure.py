"""``fedctl``'s side of security: client keys from flags, open binds refused, what ``fedctl up`` shows.

The credentials themselves are written by :func:`federation.credentials.provision`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from federation.credentials import LOCAL_PRINCIPALS, Provisioned, provision
from federation.errors import ConfigError

__all__ = ["LOCAL_PRINCIPALS", "Provisioned", "provision"]


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
