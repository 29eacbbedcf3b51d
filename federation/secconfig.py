"""``[security]`` and ``[[principals]]`` of ``federation.toml`` (docs/security.md).

Key settings name *files*, never keys: ``router_key = "keys/router.key"`` is the router's
public key file as written by :func:`federation.keys.new_keypair`; the process that owns the
key also reads its secret half, ``router.key_secret``, next to it.  Tokens are stored hashed
(``token_sha256``).  Relative paths are relative to the folder of ``federation.toml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from federation.auth import ADMIN, ROLES, check_pattern

_SECURITY_KEYS = {"router_key", "shard_key", "gateway_key", "http_tls_cert", "http_tls_key", "metrics_auth"}
_PRINCIPAL_KEYS = {"name", "role", "namespaces", "key", "token_sha256"}


@dataclass(frozen=True, slots=True)
class PrincipalSpec:
    """One ``[[principals]]`` entry: who, which role, which namespaces, and its credentials."""

    name: str
    role: str
    namespaces: tuple[str, ...] = ("*",)
    #: public key file of the principal's ZeroMQ keypair (None: HTTP only)
    key: str | None = None
    #: hex SHA-256 of the principal's HTTP token (None: ZeroMQ only)
    token_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The ``[security]`` table; present means every link of the federation is secured."""

    #: the router's public key file (its secret half ``<file>_secret`` on the router's host only)
    router_key: str
    #: the shards' public key file (one keypair for the shards of this federation)
    shard_key: str
    #: the HTTP gateway's public key file (the router process reads its secret half)
    gateway_key: str | None = None
    #: PEM certificate and key files: the gateway serves HTTPS when both are set
    http_tls_cert: str | None = None
    http_tls_key: str | None = None
    #: /metrics of the gateway needs a token (any role) when true
    metrics_auth: bool = False
    principals: tuple[PrincipalSpec, ...] = field(default_factory=tuple)

    def admin_keys(self) -> list[tuple[str, str]]:
        """``(name, public key file)`` of the admin principals (shards let them read)."""
        return [(p.name, p.key) for p in self.principals if p.role == ADMIN and p.key]

    def to_mapping(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        sec: dict[str, Any] = {"router_key": self.router_key, "shard_key": self.shard_key}
        for name in ("gateway_key", "http_tls_cert", "http_tls_key"):
            if getattr(self, name):
                sec[name] = getattr(self, name)
        if self.metrics_auth:
            sec["metrics_auth"] = True
        principals = []
        for p in self.principals:
            entry: dict[str, Any] = {"name": p.name, "role": p.role, "namespaces": list(p.namespaces)}
            if p.key:
                entry["key"] = p.key
            if p.token_sha256:
                entry["token_sha256"] = p.token_sha256
            principals.append(entry)
        return sec, principals


def _path(value: Any, base_dir: str | None) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a file name, got {value!r}")
    if os.path.isabs(value) or not base_dir:
        return os.path.normpath(os.path.abspath(value))
    return os.path.normpath(os.path.join(base_dir, value))


def parse_security(
    raw_security: Any, raw_principals: Any, problems: list[str], base_dir: str | None
) -> SecurityConfig | None:
    """Validate ``[security]`` and ``[[principals]]``; every problem is appended to ``problems``."""
    if raw_security is None:
        if raw_principals:
            problems.append("[[principals]]: needs a [security] table (router_key, shard_key)")
        return None
    if not isinstance(raw_security, dict):
        problems.append("[security]: must be a table")
        return None
    values: dict[str, Any] = {}
    for key, value in raw_security.items():
        if key not in _SECURITY_KEYS:
            problems.append(f"[security] unknown key {key!r} (known: {', '.join(sorted(_SECURITY_KEYS))})")
        elif key == "metrics_auth":
            if not isinstance(value, bool):
                problems.append(f"[security] metrics_auth: must be true or false, got {value!r}")
            else:
                values[key] = value
        elif _looks_inline_key(value):
            problems.append(f"[security] {key}: name a key file, never a key itself")
        else:
            try:
                values[key] = _path(value, base_dir)
            except ValueError as e:
                problems.append(f"[security] {key}: {e}")
    for required in ("router_key", "shard_key"):
        if required not in raw_security:
            problems.append(f"[security] {required}: required (a public key file, see fedctl keys new)")
    if bool(raw_security.get("http_tls_cert")) != bool(raw_security.get("http_tls_key")):
        problems.append("[security] http_tls_cert and http_tls_key: give both or neither")

    principals: list[PrincipalSpec] = []
    if raw_principals is None:
        raw_principals = []
    if not isinstance(raw_principals, list):
        problems.append("[[principals]]: must be an array of tables")
        raw_principals = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_principals):
        where = f"[[principals]] #{i + 1}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: must be a table")
            continue
        for key in raw:
            if key not in _PRINCIPAL_KEYS and key != "token":
                problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_PRINCIPAL_KEYS))})")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: name must be a non-empty string")
            continue
        where = f"[[principals]] {name}"
        if name in seen or name in ("router", "gateway"):
            problems.append(f"{where}: the name is already taken")
        seen.add(name)
        role = raw.get("role")
        if role not in ROLES:
            problems.append(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
        namespaces = raw.get("namespaces", ["*"])
        if not isinstance(namespaces, list) or not namespaces:
            problems.append(f"{where}: namespaces must be a non-empty list of patterns")
            namespaces = ["*"]
        for pattern in namespaces:
            why = check_pattern(pattern)
            if why:
                problems.append(f"{where}: namespaces: {why}")
        key = raw.get("key")
        if key is not None:
            if _looks_inline_key(key):
                problems.append(f"{where}: key: name a public key file, never a key itself")
                key = None
            else:
                try:
                    key = _path(key, base_dir)
                except ValueError as e:
                    problems.append(f"{where}: key: {e}")
                    key = None
        token = raw.get("token_sha256")
        if token is not None and (
            not isinstance(token, str) or len(token) != 64 or any(c not in "0123456789abcdef" for c in token)
        ):
            problems.append(f"{where}: token_sha256 must be 64 lowercase hex digits (fedctl keys token)")
            token = None
        if "token" in raw:
            problems.append(f"{where}: store the token hashed, as token_sha256, never the token")
        if key is None and token is None:
            problems.append(f"{where}: give a key (ZeroMQ) or a token_sha256 (HTTP), or both")
        principals.append(
            PrincipalSpec(
                name,
                str(role),
                tuple(str(p) for p in namespaces),
                key,
                token,
            )
        )
    if "router_key" not in values or "shard_key" not in values:
        return None
    return SecurityConfig(
        router_key=values["router_key"],
        shard_key=values["shard_key"],
        gateway_key=values.get("gateway_key"),
        http_tls_cert=values.get("http_tls_cert"),
        http_tls_key=values.get("http_tls_key"),
        metrics_auth=values.get("metrics_auth", False),
        principals=tuple(principals),
    )


_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def _looks_inline_key(value: Any) -> bool:
    """A Z85 key (40 characters of its alphabet) rather than a key file's name (``NAME.key``)."""
    return (
        isinstance(value, str)
        and len(value) == 40
        and set(value) <= _Z85
        and not value.endswith((".key", ".key_secret"))
    )
