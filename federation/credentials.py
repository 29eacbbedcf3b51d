"""Credentials for a secured federation (``fedctl up --secure``, the load test's ``--secure``).

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


def security_config(creds: Provisioned) -> Any:
    """The :class:`~federation.secconfig.SecurityConfig` naming ``creds``' files."""
    from federation.secconfig import parse_security

    problems: list[str] = []
    sec = parse_security(creds.security, creds.principals, problems, None)
    if problems or sec is None:
        raise ConfigError(problems or ["no [security]"])
    return sec


def client_env(creds: Provisioned, principal: str) -> dict[str, str]:
    """``FED_KEY``/``FED_SERVER_KEY`` (ZeroMQ) and ``FED_TOKEN`` (HTTP) of one principal."""
    return {
        "FED_KEY": creds.key(principal),
        "FED_SERVER_KEY": creds.public("router"),
        "FED_TOKEN": creds.tokens[principal],
    }


def env_curve(env: Any = None) -> Any:
    """The :class:`federation.keys.ClientCurve` of ``FED_KEY``/``FED_SERVER_KEY``, or None."""
    env = os.environ if env is None else env
    key = env.get("FED_KEY")
    if not key:
        return None
    from federation.keys import ClientCurve

    return ClientCurve.from_files(key, env.get("FED_SERVER_KEY") or None)
