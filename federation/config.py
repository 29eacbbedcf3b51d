"""Typed configuration.

``SchedulerConfig`` mirrors Luigi's ``[scheduler]`` section (same keys, same
defaults, luigi 3.8.1) and is what every shard core runs with.  The whole
``federation.toml`` (shards, namespace groups, router binds) builds on it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from federation.errors import ConfigError
from federation.secconfig import SecurityConfig, parse_security


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Luigi's ``[scheduler]`` settings, with Luigi's defaults."""

    retry_delay: float = 900.0
    remove_delay: float = 600.0
    worker_disconnect_delay: float = 60.0
    state_path: str = (
        "/var/lib/luigi-server/state.pickle"  # accepted for compatibility; the store replaces it
    )
    batch_emails: bool = False
    disable_window: int = 3600
    retry_count: int = 999999999
    disable_hard_timeout: int = 999999999
    disable_persist: int = 86400
    max_shown_tasks: int = 100000
    max_graph_nodes: int = 100000
    record_task_history: bool = False
    prune_on_get_work: bool = False
    pause_enabled: bool = True
    send_messages: bool = True
    metrics_collector: str = "default"
    metrics_custom_import: str | None = None
    stable_done_cooldown_secs: int = 10
    #: the ``[resources]`` section: resource name -> capacity
    resources: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_mapping(
        cls, data: dict[str, Any], *, source: str = "", section: str = "scheduler"
    ) -> SchedulerConfig:
        """Build from a parsed TOML/INI mapping; every problem reported at once."""
        problems: list[str] = []
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in known:
                problems.append(f"[{section}] unknown key {key!r}")
                continue
            try:
                values[name] = _coerce(name, known[name].type, raw)
            except (TypeError, ValueError) as e:
                problems.append(f"[{section}] {key}: {e}")
        if problems:
            raise ConfigError(problems, source=source)
        return cls(**values)

    def replace(self, **changes: Any) -> SchedulerConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def coerce(typ: Any, raw: Any) -> Any:
    """``raw`` (from TOML, an environment variable or a flag) as a value of the declared ``typ``.

    The one coercer of every config table (``[scheduler]``, ``[router]``, ``[tui]``): booleans
    take ``true/false/1/0/yes/no/on/off`` in any case, integers refuse fractions and booleans,
    floats refuse NaN and infinity.  Raises ``TypeError``/``ValueError`` with a short reason.
    """
    typ = str(typ)
    if typ.startswith("bool"):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise TypeError(f"must be true or false, got {raw!r}")
    if typ.startswith("int"):
        if isinstance(raw, bool):
            raise TypeError(f"must be an integer, got {raw!r}")
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError(f"must be an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number (an integer), got {raw!r}") from None
    if typ.startswith("float"):
        if isinstance(raw, bool):
            raise TypeError(f"must be a number, got {raw!r}")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number, got {raw!r}") from None
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"must be a finite number, got {raw!r}")
        return value
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise TypeError(f"must be a string, got {raw!r}")
    return raw


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _coerce(name: str, typ: Any, raw: Any) -> Any:
    if name == "resources":
        if not isinstance(raw, dict):
            raise TypeError("must be a table of name = integer")
        return {str(k): resource_capacity(k, v) for k, v in raw.items()}
    value = coerce(typ, raw)
    if name == "metrics_collector" and value not in METRICS_COLLECTORS:
        # luigid refuses to start on any other name (luigi.metrics.MetricsCollectors)
        raise ValueError(f"must be one of {', '.join(METRICS_COLLECTORS)}, got {raw!r}")
    return value


#: the names luigid's ``metrics_collector`` accepts (``default`` and ``none`` both mean none)
METRICS_COLLECTORS = ("default", "none", "datadog", "prometheus", "custom")


def resource_capacity(name: Any, raw: Any) -> int:
    """A ``[resources]`` capacity: a non-negative integer (text such as luigi.cfg's ``"2"`` too)."""
    try:
        value = coerce("int", raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        value = -1
    if isinstance(raw, float) or value < 0:
        raise ValueError(f"resource {name!r} must be a non-negative integer, got {raw!r}")
    return value


# -- federation.toml ---------------------------------------------------------------------------

DEFAULT_ROUTER_ZMQ = "tcp://127.0.0.1:5555"
DEFAULT_ROUTER_HTTP = "127.0.0.1:8082"
DEFAULT_GROUP = "default"
ENV_PREFIX = "FED_"

_ROUTER_KEYS = {"zmq", "http", "timeout", "health_timeout", "relay_interval", "max_message_bytes"}
_SHARD_KEYS = {"id", "endpoint", "store", "schema", "standbys", "session_timeout"}
# [tui] belongs to `fedctl tui` (tui/config.py validates it); the federation only lets it be
_TOP_KEYS = {
    "router",
    "shards",
    "groups",
    "namespaces",
    "default_group",
    "scheduler",
    "resources",
    "tui",
    "luigi_config",
    "security",
    "principals",
}
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """The ``[router]`` table."""

    #: ZeroMQ endpoint the router binds for clients (workers, fedctl, the TUI)
    zmq: str = DEFAULT_ROUTER_ZMQ
    #: ``host:port`` of Luigi's HTTP API and web visualiser, or None for no HTTP gateway
    http: str | None = DEFAULT_ROUTER_HTTP
    #: seconds a shard may take to answer before the caller gets an ``unavailable`` error
    timeout: float = 5.0
    #: seconds a shard may take to answer ``federation_health`` before it is shown as down
    health_timeout: float = 1.0
    #: seconds between two pulls of the shards' change feeds (cross-shard dependencies)
    relay_interval: float = 0.25
    #: largest request accepted at the front (ZMQ_MAXMSGSIZE)
    max_message_bytes: int = 16 * 1024 * 1024

    @property
    def http_host_port(self) -> tuple[str, int] | None:
        if not self.http:
            return None
        host, _, port = self.http.rpartition(":")
        return host or "127.0.0.1", int(port)


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """One ``[[shards]]`` entry."""

    id: str
    #: ZeroMQ endpoint the shard binds and the router connects to
    endpoint: str
    #: store URL: ``sqlite:///path/s0.db`` (a bare path means an SQLite file) or ``postgresql://...``
    store: str
    #: Postgres schema (default :func:`schema_for_shard`); ignored for SQLite
    schema: str | None = None
    #: endpoints of standby processes (``fedctl shard serve --standby --bind EP``, Postgres only):
    #: the router connects to ``endpoint`` and these, and only the one owner binds (docs/operations.md)
    standbys: tuple[str, ...] = ()
    #: seconds after which Postgres ends a frozen owner's session, so a standby can take over
    #: (None: 30 s, or 5 s for a shard with standbys; see :attr:`owner_session_timeout`)
    session_timeout: float | None = None

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every endpoint the shard may be served on: its own, then its standbys'."""
        return (self.endpoint, *self.standbys)

    @property
    def owner_session_timeout(self) -> float:
        """The owner's Postgres ``idle_session_timeout``: how long a frozen owner keeps the shard."""
        if self.session_timeout is not None:
            return self.session_timeout
        return STANDBY_SESSION_TIMEOUT if self.standbys else DEFAULT_SESSION_TIMEOUT

    @property
    def backend(self) -> str:
        """``postgres`` or ``sqlite``, from the store URL (what the shard's store reports)."""
        return "postgres" if self.store.lower().startswith("postgres") else "sqlite"

    @property
    def location(self) -> str:
        """Where the store keeps this shard, as the shard reports it (an SQLite path, a Postgres
        schema); never the URL's user or password."""
        if self.backend == "postgres":
            return f"schema {self.schema or schema_for_shard(self.id)}"
        path = self.store.split("://", 1)[-1].split("?", 1)[0]
        return path[1:] if self.store.startswith("sqlite:///") else path


#: a shard owner's Postgres idle_session_timeout without standbys (a frozen owner's lock is freed
#: after it), and with standbys (how long a frozen owner keeps its standby from taking over)
DEFAULT_SESSION_TIMEOUT = 30.0
STANDBY_SESSION_TIMEOUT = 5.0


def schema_for_shard(shard_id: str) -> str:
    """The default Postgres schema of a shard: ``fed_`` + the id lowercased, other characters -> ``_``."""
    return "fed_" + re.sub(r"[^a-z0-9_]", "_", shard_id.lower())


@dataclass(frozen=True, slots=True)
class FederationConfig:
    """The whole ``federation.toml``: router binds, shards, namespace groups, Luigi's settings.

    Every shard belongs to exactly one group.  ``namespaces`` pins a Luigi task
    namespace (and every namespace below it, see :mod:`federation.placement`) to a
    group; any other namespace is placed in ``default_group``.
    """

    shards: tuple[ShardSpec, ...]
    groups: dict[str, tuple[str, ...]]
    namespaces: dict[str, str] = field(default_factory=dict)
    default_group: str = DEFAULT_GROUP
    router: RouterConfig = field(default_factory=RouterConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    source: str = ""
    #: layer Luigi's own configuration (luigi.cfg / luigi.toml) under this file; ``fedctl up``
    #: writes ``false`` into the resolved file it hands its children (see :func:`resolve_config`)
    luigi_config: bool = True
    #: ``[security]`` and ``[[principals]]`` (docs/security.md); None: nothing is secured
    security: SecurityConfig | None = None

    # -- lookups ---------------------------------------------------------------
    @property
    def shard_ids(self) -> list[str]:
        return [s.id for s in self.shards]

    def shard(self, shard_id: str) -> ShardSpec:
        for s in self.shards:
            if s.id == shard_id:
                return s
        raise ConfigError(f"no shard {shard_id!r} (known: {', '.join(self.shard_ids)})", source=self.source)

    def group_of_shard(self, shard_id: str) -> str:
        for group, members in self.groups.items():
            if shard_id in members:
                return group
        raise ConfigError(f"shard {shard_id!r} is in no group", source=self.source)

    # -- building ----------------------------------------------------------------
    @classmethod
    def from_mapping(
        cls, data: dict[str, Any], *, source: str = "", base_dir: str | None = None
    ) -> FederationConfig:
        """Validate a parsed ``federation.toml``; every problem is reported at once (ConfigError)."""
        problems: list[str] = []
        if not isinstance(data, dict):
            raise ConfigError("the configuration must be a table", source=source)
        for key in data:
            if key not in _TOP_KEYS:
                problems.append(f"unknown key {key!r} (known: {', '.join(sorted(_TOP_KEYS))})")

        router = _parse_router(data.get("router", {}), problems)
        shards = _parse_shards(data.get("shards", []), problems, base_dir)
        ids = [s.id for s in shards]

        default_group = data.get("default_group", DEFAULT_GROUP)
        if not isinstance(default_group, str) or not default_group:
            problems.append(f"default_group: must be a non-empty string, got {default_group!r}")
            default_group = DEFAULT_GROUP

        groups: dict[str, tuple[str, ...]] = {}
        raw_groups = data.get("groups", {})
        if not isinstance(raw_groups, dict):
            problems.append("[groups]: must be a table of group = [shard ids]")
            raw_groups = {}
        seen: dict[str, str] = {}
        for group, members in raw_groups.items():
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                problems.append(f"[groups] {group}: must be a list of shard ids")
                continue
            if not members:
                problems.append(f"[groups] {group}: has no shards")
            for m in members:
                if m not in ids:
                    problems.append(
                        f"[groups] {group}: unknown shard {m!r} (shards: {', '.join(ids) or 'none'})"
                    )
                elif m in seen:
                    problems.append(f"[groups] {group}: shard {m!r} is already in group {seen[m]!r}")
                else:
                    seen[m] = group
            groups[group] = tuple(dict.fromkeys(members))
        # a shard named in no group serves the default group
        rest = tuple(i for i in ids if i not in seen)
        if rest:
            groups[default_group] = groups.get(default_group, ()) + rest
        if shards and not groups.get(default_group):
            problems.append(f"default_group: group {default_group!r} has no shards")

        namespaces: dict[str, str] = {}
        raw_ns = data.get("namespaces", {})
        if not isinstance(raw_ns, dict):
            problems.append('[namespaces]: must be a table of "namespace" = "group"')
            raw_ns = {}
        for ns, group in _flatten_namespaces(raw_ns).items():
            if not ns or ns.startswith(".") or ns.endswith(".") or ".." in ns:
                problems.append(
                    f"[namespaces] {ns!r}: not a Luigi namespace (dotted names, e.g. finance.ledger)"
                )
            elif not isinstance(group, str) or group not in groups:
                problems.append(
                    f"[namespaces] {ns}: unknown group {group!r} (groups: {', '.join(groups) or 'none'})"
                )
            else:
                namespaces[ns] = group

        sched_section = data.get("scheduler", {})
        if not isinstance(sched_section, dict):
            problems.append("[scheduler]: must be a table")
            sched_section = {}
        section = dict(sched_section)
        if "resources" in data:
            section["resources"] = data["resources"]
        scheduler = SchedulerConfig()
        try:
            scheduler = SchedulerConfig.from_mapping(section)
        except ConfigError as e:
            problems.extend(e.problems)

        luigi_config = True
        try:
            luigi_config = coerce("bool", data.get("luigi_config", True))
        except (TypeError, ValueError) as e:
            problems.append(f"luigi_config: {e}")

        security = parse_security(data.get("security"), data.get("principals"), problems, base_dir)

        if not shards:
            problems.append("[[shards]]: at least one shard is required")
        if problems:
            raise ConfigError(problems, source=source)
        return cls(
            shards=tuple(shards),
            groups=groups,
            namespaces=namespaces,
            default_group=default_group,
            router=router,
            scheduler=scheduler,
            source=source,
            luigi_config=luigi_config,
            security=security,
        )

    @classmethod
    def local(
        cls,
        n_shards: int = 3,
        *,
        data_dir: str = ".federation",
        zmq: str = DEFAULT_ROUTER_ZMQ,
        http: str | None = DEFAULT_ROUTER_HTTP,
        shard_ports: list[int] | None = None,
        scheduler: SchedulerConfig | None = None,
    ) -> FederationConfig:
        """A one-host federation: shards ``s0..s<n-1>`` with SQLite files under ``data_dir``.

        ``shard_ports`` gives the shards' TCP ports on 127.0.0.1 (default 5601, 5602, ...).
        """
        if n_shards < 1:
            raise ConfigError("a federation needs at least one shard")
        ports = shard_ports or [5601 + i for i in range(n_shards)]
        if len(ports) != n_shards:
            raise ConfigError(f"{n_shards} shards but {len(ports)} ports")
        base = os.path.abspath(data_dir)
        shards = tuple(
            ShardSpec(f"s{i}", f"tcp://127.0.0.1:{p}", f"sqlite:///{os.path.join(base, f's{i}.db')}")
            for i, p in enumerate(ports)
        )
        return cls(
            shards=shards,
            groups={DEFAULT_GROUP: tuple(s.id for s in shards)},
            router=RouterConfig(zmq=zmq, http=http),
            scheduler=scheduler or SchedulerConfig(),
        )

    def replace(self, **changes: Any) -> FederationConfig:
        return dataclasses.replace(self, **changes)

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of :meth:`from_mapping` (what ``to_toml`` writes)."""
        router = {f.name: getattr(self.router, f.name) for f in fields(RouterConfig)}
        if router["http"] is None:
            router["http"] = ""
        sched = self.scheduler.to_dict()
        resources = sched.pop("resources")
        defaults = SchedulerConfig().to_dict()
        sched = {k: v for k, v in sched.items() if v is not None and v != defaults[k]}
        out: dict[str, Any] = {
            "default_group": self.default_group,
            "router": router,
            "shards": [
                {k: v for k, v in dataclasses.asdict(s).items() if v is not None and v != ()}
                for s in self.shards
            ],
            "groups": {g: list(m) for g, m in self.groups.items()},
            "namespaces": dict(self.namespaces),
            "scheduler": sched,
            "resources": dict(resources),
        }
        if self.security is not None:
            out["security"], principals = self.security.to_mapping()
            if principals:
                out["principals"] = principals
        if not self.luigi_config:
            out = {"luigi_config": False, **out}
        return out

    def to_toml(self) -> str:
        """Render as ``federation.toml`` text (``fedctl up`` hands it to its children)."""
        return _dump_toml(self.to_mapping())


def _flatten_namespaces(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``finance.ledger = "g"`` written without quotes is a nested table in TOML; read it as the dotted name."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten_namespaces(value, name))
        else:
            out[name] = value
    return out


def _parse_router(raw: Any, problems: list[str]) -> RouterConfig:
    if not isinstance(raw, dict):
        problems.append("[router]: must be a table")
        return RouterConfig()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _ROUTER_KEYS:
            problems.append(f"[router] unknown key {key!r} (known: {', '.join(sorted(_ROUTER_KEYS))})")
            continue
        try:
            values[name] = _router_value(name, value)
        except (TypeError, ValueError) as e:
            problems.append(f"[router] {key}: {e}")
    return RouterConfig(**values)


def _router_value(name: str, value: Any) -> Any:
    if name == "zmq":
        return _zmq_endpoint(value)
    if name == "http":
        if value in ("", None, False):
            return None
        if not isinstance(value, str):
            raise TypeError(f'must be "host:port" (or "" for no HTTP gateway), got {value!r}')
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or "/" in value:
            raise ValueError(f'must be "host:port", e.g. 127.0.0.1:8082, got {value!r}')
        return value
    if name == "max_message_bytes":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
            raise ValueError(f"must be an integer of at least 1024, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return seconds


def _zmq_endpoint(value: Any) -> str:
    if not isinstance(value, str) or "://" not in value:
        raise ValueError(f"must be a ZeroMQ endpoint like tcp://127.0.0.1:5555, got {value!r}")
    scheme = value.split("://", 1)[0]
    if scheme not in ("tcp", "ipc", "inproc"):
        raise ValueError(f"unsupported ZeroMQ transport {scheme!r} in {value!r} (tcp, ipc or inproc)")
    return value


def _parse_shards(raw: Any, problems: list[str], base_dir: str | None) -> list[ShardSpec]:
    if not isinstance(raw, list):
        problems.append("[[shards]]: must be an array of tables (one [[shards]] per shard)")
        return []
    out: list[ShardSpec] = []
    seen_ids: set[str] = set()
    seen_eps: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"[[shards]] #{i + 1}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a table")
            continue
        ok = True
        for key in entry:
            if key not in _SHARD_KEYS:
                problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(_SHARD_KEYS))})")
        sid = entry.get("id")
        if not isinstance(sid, str) or not sid or not set(sid) <= _ID_CHARS:
            problems.append(
                f"{where}.id: must be a non-empty string of letters, digits, '_', '-', '.', got {sid!r}"
            )
            ok = False
        else:
            where = f"[[shards]] {sid!r}"
            if sid in seen_ids:
                problems.append(f"{where}.id: duplicate shard id")
                ok = False
            seen_ids.add(sid)
        endpoint = entry.get("endpoint")
        try:
            endpoint = _zmq_endpoint(endpoint)
            if endpoint in seen_eps:
                problems.append(f"{where}.endpoint: {endpoint} is used by another shard")
                ok = False
            seen_eps.add(endpoint)
        except ValueError as e:
            problems.append(f"{where}.endpoint: {e}")
            ok = False
        store = entry.get("store")
        if not isinstance(store, str) or not store:
            problems.append(
                f'{where}.store: required, e.g. "sqlite:///data/{sid}.db" or "postgresql://user@host/db"'
            )
            ok = False
        else:
            try:
                store = _store_url(store, base_dir)
            except ValueError as e:
                problems.append(f"{where}.store: {e}")
                ok = False
        schema = entry.get("schema")
        if schema is not None and (
            not isinstance(schema, str) or not schema or not set(schema) <= _ID_CHARS - {"-", "."}
        ):
            problems.append(
                f"{where}.schema: must be a SQL identifier (letters, digits, '_'), got {schema!r}"
            )
            ok = False
        standbys: list[str] = []
        raw_standbys = entry.get("standbys", [])
        if not isinstance(raw_standbys, list):
            problems.append(
                f'{where}.standbys: must be a list of ZeroMQ endpoints, e.g. ["tcp://host-b:5601"]'
            )
            ok = False
            raw_standbys = []
        for ep in raw_standbys:
            try:
                ep = _zmq_endpoint(ep)
            except ValueError as e:
                problems.append(f"{where}.standbys: {e}")
                ok = False
                continue
            if ep in seen_eps:
                problems.append(f"{where}.standbys: {ep} is used by another shard or twice")
                ok = False
            seen_eps.add(ep)
            standbys.append(ep)
        if standbys and isinstance(store, str) and not store.lower().startswith("postgres"):
            problems.append(
                f"{where}.standbys: needs a Postgres store (a standby waits on the shard's lock in "
                "Postgres); an SQLite shard is restarted in place"
            )
            ok = False
        session_timeout = entry.get("session_timeout")
        if session_timeout is not None:
            if (
                isinstance(session_timeout, bool)
                or not isinstance(session_timeout, (int, float))
                or not 1 <= session_timeout <= 3600
            ):
                problems.append(
                    f"{where}.session_timeout: must be a number of seconds from 1 to 3600, got {session_timeout!r}"
                )
                ok = False
            else:
                session_timeout = float(session_timeout)
        if ok:
            assert isinstance(sid, str) and isinstance(endpoint, str) and isinstance(store, str)
            out.append(ShardSpec(sid, endpoint, store, schema, tuple(standbys), session_timeout))
    return out


def _store_url(value: str, base_dir: str | None) -> str:
    """A store URL; a bare path becomes an SQLite URL, relative to the config file's folder."""
    if "://" in value:
        scheme = value.split("://", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"unsupported store {scheme!r} (sqlite:///path or postgresql://...)")
        if (
            scheme == "sqlite"
            and value.startswith("sqlite:///")
            and not value.startswith("sqlite:////")
            and base_dir
            and value != "sqlite:///:memory:"
        ):
            return "sqlite:///" + os.path.normpath(os.path.join(base_dir, value[len("sqlite:///") :]))
        return value
    path = value if os.path.isabs(value) or not base_dir else os.path.join(base_dir, value)
    return "sqlite:///" + os.path.normpath(os.path.abspath(path))


def read_toml(path: str) -> dict[str, Any]:
    """A TOML file as a dict; an unreadable or invalid file is a ConfigError naming it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", source=path) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", source=path) from e


def load_scheduler_config(path: str | None) -> SchedulerConfig:
    """``[scheduler]`` and ``[resources]`` of a TOML file (a standalone shard's settings)."""
    if not path:
        return SchedulerConfig()
    data = read_toml(path)
    section = dict(data.get("scheduler", {}))
    if "resources" in data:
        section["resources"] = data["resources"]
    return SchedulerConfig.from_mapping(section, source=path)


def load_federation_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    luigi: Any = False,
) -> FederationConfig:
    """Read ``federation.toml`` and apply, in rising precedence, env (``FED_...``) and CLI overrides.

    Precedence: CLI ``overrides`` > environment > file > defaults.  ``path`` None
    falls back to ``$FED_CONFIG``.  Overrides and env cover the scalar settings:

    ==========================  ====================================  ==========================
    override key                environment                           file
    ==========================  ====================================  ==========================
    ``router.zmq``              ``FED_ROUTER_ZMQ``                    ``[router] zmq``
    ``router.http``             ``FED_ROUTER_HTTP``                   ``[router] http``
    ``router.<key>``            ``FED_ROUTER_<KEY>``                  ``[router] <key>``
    ``default_group``           ``FED_DEFAULT_GROUP``                 ``default_group``
    ``scheduler.<key>``         ``FED_SCHEDULER_<KEY>``               ``[scheduler] <key>``
    ``resources.<name>``        ``FED_RESOURCES_<NAME>``              ``[resources] <name>``
    ==========================  ====================================  ==========================

    Override values that are None are ignored (an argparse flag that was not given).
    ``luigi`` True layers Luigi's own configuration under the file (see :func:`resolve_config`,
    which servers use to also get where each value came from); the default leaves it out.
    """
    resolved = resolve_config(path, env=env, overrides=overrides, luigi=luigi)
    assert resolved.federation is not None
    return resolved.federation


def env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """The ``FED_ROUTER_*``, ``FED_SCHEDULER_*`` and ``FED_DEFAULT_GROUP`` variables as override keys."""
    out: dict[str, str] = {}
    known_sched = {f.name for f in fields(SchedulerConfig)} - {"resources"}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest == "default_group":
            out["default_group"] = value
        elif rest.startswith("router_") and rest[len("router_") :] in _ROUTER_KEYS:
            out["router." + rest[len("router_") :]] = value
        elif rest.startswith("scheduler_") and rest[len("scheduler_") :] in known_sched:
            out["scheduler." + rest[len("scheduler_") :]] = value
    return out


def merge_overrides(data: Mapping[str, Any], *layers: Mapping[str, Any]) -> dict[str, Any]:
    """Apply dotted-key override layers (later wins) onto a parsed TOML mapping, without mutating it."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for layer in layers:
        for key, value in layer.items():
            if value is None:
                continue
            section, _, name = key.partition(".")
            if not name:
                out[section] = value
                continue
            table = out.get(section)
            if not isinstance(table, dict):
                table = {}
                out[section] = table
            if section == "router":
                value = _from_text(name, value)
            table[name] = value
    return out


# -- every layer, and where each setting came from ---------------------------------------------------
#
# A server's settings, highest precedence first: the command line (``overrides``), the environment
# (``FED_...``), ``federation.toml``, Luigi's own configuration (luigi.cfg / luigi.toml, as luigid
# reads it; :mod:`federation.luigicfg`), the defaults (luigid's).  Each ``[scheduler]`` key and each
# ``[resources]`` name is taken from the highest layer that sets it.

LAYERS = ("command line", "env", "federation.toml", "luigi", "default")

#: luigid settings the federation accepts but does not act on, and what it does instead
NOT_HONOURED: dict[str, str] = {
    "state_path": "no state pickle is written or read; every shard commits its state to its own "
    "store ([[shards]] store), which survives restarts and kill -9",
    "batch_emails": "the federation sends no e-mails (no batched error or scheduling-failure "
    "e-mails; [batch_email] and [email] are not read); Luigi workers still send their own error "
    "e-mails",
    "record_task_history": "Luigi's task-history database ([task_history] db_connection) is not "
    "written and /history is not served; every shard records each status change in its own store "
    "instead (fedctl history export writes it to Parquet)",
    "metrics_collector": "no Luigi metrics collector runs; the router and the shards serve their own "
    "Prometheus /metrics (the HTTP gateway's /metrics, --metrics)",
    "metrics_custom_import": "no Luigi metrics collector runs; the router and the shards serve their "
    "own Prometheus /metrics (the HTTP gateway's /metrics, --metrics)",
}


@dataclass(frozen=True, slots=True)
class Source:
    """Where one setting's value came from: a layer of :data:`LAYERS` and the place in it."""

    layer: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.layer}: {self.where}" if self.where else self.layer


@dataclass(frozen=True, slots=True)
class ResolvedConfig:
    """The effective settings of a server process, where each came from, and what to warn about."""

    #: the whole federation, or None for a standalone shard's settings (no ``[[shards]]``)
    federation: FederationConfig | None
    scheduler: SchedulerConfig
    #: ``"scheduler.<key>"``, ``"resources.<name>"``, ``"router.<key>"``, ``"default_group"``,
    #: ``"luigi_config"`` -> where its value came from
    sources: dict[str, Source]
    #: what was read from Luigi's configuration (None: not read, ``luigi_config = false``)
    luigi: Any
    #: one sentence per setting the federation does not honour or that luigid would ignore
    warnings: tuple[str, ...]
    path: str | None = None

    def settings(self) -> list[tuple[str, Any, Source]]:
        """Every setting as ``(key, value, source)``, in a stable order (``fedctl config show``)."""
        out: list[tuple[str, Any, Source]] = []
        if self.federation is not None:
            out.append(("default_group", self.federation.default_group, self.sources["default_group"]))
            for f in fields(RouterConfig):
                key = f"router.{f.name}"
                out.append((key, getattr(self.federation.router, f.name), self.sources[key]))
        for name, value in self.scheduler.to_dict().items():
            if name != "resources":
                out.append((f"scheduler.{name}", value, self.sources[f"scheduler.{name}"]))
        for name, value in sorted(self.scheduler.resources.items()):
            out.append((f"resources.{name}", value, self.sources[f"resources.{name}"]))
        out.append(("luigi_config", self.luigi is not None, self.sources["luigi_config"]))
        return out

    def to_toml(self, header: str = "") -> str:
        """The resolved federation as a self-contained ``federation.toml`` (``luigi_config = false``).

        ``fedctl up`` hands this file to its children, so every shard, the router and any restart
        of them run with exactly the values resolved once in the parent.
        """
        if self.federation is None:
            raise ConfigError("no [[shards]]: not a federation", source=self.path or "")
        lines = [f"# {line}" if line else "#" for line in header.splitlines()]
        for key, value, src in self.settings():
            if src.layer not in ("default", "federation.toml") and key != "luigi_config":
                lines.append(f"# {key} = {value!r} from {src}")
        text = self.federation.replace(scheduler=self.scheduler, luigi_config=False).to_toml()
        return ("\n".join(lines) + "\n\n" if lines else "") + text


def resolve_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    luigi: Any = True,
    federation: bool = True,
) -> ResolvedConfig:
    """Every layer of a server's configuration, merged (see :data:`LAYERS` for the precedence).

    ``path`` None falls back to ``$FED_CONFIG``.  ``luigi``: True reads Luigi's configuration the
    way luigid does (:func:`federation.luigicfg.read_luigi_config`), False skips it, a
    :class:`federation.luigicfg.LuigiConfig` is used as given; a file with ``luigi_config = false``
    skips it in any case.  ``federation`` False reads only ``[scheduler]``/``[resources]`` (a
    standalone shard, whose ``--config`` has no ``[[shards]]``).  Every problem of every layer is
    reported at once, each naming its file (or variable) and key.
    """
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    data: dict[str, Any] = {}
    base_dir: str | None = None
    source = path or "<defaults>"
    if path:
        data = read_toml(path)
        base_dir = os.path.dirname(os.path.abspath(path))
    known = {f.name: f for f in fields(SchedulerConfig) if f.name != "resources"}
    problems: list[str] = []  # of the luigi and env layers, each with its own file or variable
    sources: dict[str, Source] = {}

    use_luigi = luigi is not False
    sources["luigi_config"] = Source("default")
    if "luigi_config" in data:
        sources["luigi_config"] = Source("federation.toml", f"{source} luigi_config")
        try:
            use_luigi = use_luigi and coerce("bool", data["luigi_config"])
        except (TypeError, ValueError):
            use_luigi = False  # reported by the file's validation below
    luigi_cfg = None
    if use_luigi:
        if luigi is True:
            from federation.luigicfg import read_luigi_config

            luigi_cfg = read_luigi_config()
        else:
            luigi_cfg = luigi

    # the layers of [scheduler] and [resources], lowest first
    sched: dict[str, Any] = {}
    res: dict[str, Any] = {}
    if luigi_cfg is not None:
        for key, lv in luigi_cfg.scheduler.items():
            try:
                sched[key] = _coerce(key, known[key].type, lv.raw)
            except (TypeError, ValueError) as e:
                problems.append(f"{lv.file}: [{lv.section}] {lv.key}: {e}")
            else:
                sources[f"scheduler.{key}"] = Source("luigi", lv.source)
        for name, lv in luigi_cfg.resources.items():
            try:
                res[name] = resource_capacity(name, lv.raw)
            except ValueError as e:
                problems.append(f"{lv.file}: [resources] {name}: {e}")
            else:
                sources[f"resources.{name}"] = Source("luigi", lv.source)

    file_sched = data.get("scheduler", {})
    if isinstance(file_sched, dict):
        for key, value in file_sched.items():
            name = key.replace("-", "_")
            sched[name if name in known else key] = value
            sources[f"scheduler.{name}"] = Source("federation.toml", f"{source} [scheduler] {key}")
    file_res = data.get("resources", {})
    if isinstance(file_res, dict):
        for name, value in file_res.items():
            res[str(name)] = value
            sources[f"resources.{name}"] = Source("federation.toml", f"{source} [resources] {name}")

    env_notes: list[str] = []
    for var, value in sorted(env.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :]
        if rest.lower().startswith("scheduler_") and rest[len("scheduler_") :].lower() not in known:
            env_notes.append(f"environment {var}: not a [scheduler] setting; ignored")
        elif rest.lower().startswith("scheduler_"):
            key = rest[len("scheduler_") :].lower()
            try:
                sched[key] = _coerce(key, known[key].type, value)
            except (TypeError, ValueError) as e:
                problems.append(f"environment {var}: {e}")
            else:
                sources[f"scheduler.{key}"] = Source("env", var)
        elif rest.lower().startswith("resources_") and len(rest) > len("resources_"):
            name = resource_env_name(rest[len("resources_") :], res)
            try:
                res[name] = resource_capacity(name, value)
            except ValueError as e:
                problems.append(f"environment {var}: {e}")
            else:
                sources[f"resources.{name}"] = Source("env", var)

    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section == "scheduler":
            sched[name.replace("-", "_")] = value
        elif section == "resources":
            res[name] = value
        sources[key] = Source("command line", key)

    layered: dict[str, Any] = dict(data)
    layered["scheduler"] = sched if isinstance(file_sched, dict) else file_sched
    if res or "resources" in data:
        layered["resources"] = res if isinstance(file_res, dict) else file_res
    # [router] and default_group: env and command line over the file, as load_federation_config did
    rest_env = {k: v for k, v in env_overrides(env).items() if not k.startswith("scheduler.")}
    rest_cli = {k: v for k, v in overrides.items() if not k.startswith(("scheduler.", "resources."))}
    layered = merge_overrides(layered, rest_env, rest_cli)

    fed: FederationConfig | None = None
    scheduler = SchedulerConfig()
    file_problems: list[str] = []
    try:
        if federation:
            fed = FederationConfig.from_mapping(layered, source=source, base_dir=base_dir)
            scheduler = fed.scheduler
        else:
            table = dict(layered["scheduler"]) if isinstance(layered["scheduler"], dict) else {}
            if "resources" in layered:
                table["resources"] = layered["resources"]
            scheduler = SchedulerConfig.from_mapping(table, source=source)
            if "luigi_config" in data:
                coerce("bool", data["luigi_config"])
    except ConfigError as e:
        file_problems = e.problems
    except (TypeError, ValueError) as e:
        file_problems = [f"luigi_config: {e}"]
    if file_problems and not problems:
        raise ConfigError(file_problems, source=source)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in file_problems] + problems)

    for key in known:
        sources.setdefault(f"scheduler.{key}", Source("default"))
    if fed is not None:
        file_router = data.get("router", {}) if isinstance(data.get("router"), dict) else {}
        file_router_keys = {k.replace("-", "_"): k for k in file_router}
        for f in fields(RouterConfig):
            key = f"router.{f.name}"
            var = f"{ENV_PREFIX}ROUTER_{f.name.upper()}"
            if key in overrides:
                sources[key] = Source("command line", key)
            elif var in env:
                sources[key] = Source("env", var)
            elif f.name in file_router_keys:
                sources[key] = Source("federation.toml", f"{source} [router] {file_router_keys[f.name]}")
            else:
                sources[key] = Source("default")
        if "default_group" in overrides:
            sources["default_group"] = Source("command line", "default_group")
        elif f"{ENV_PREFIX}DEFAULT_GROUP" in env:
            sources["default_group"] = Source("env", f"{ENV_PREFIX}DEFAULT_GROUP")
        elif "default_group" in data:
            sources["default_group"] = Source("federation.toml", f"{source} default_group")
        else:
            sources["default_group"] = Source("default")

    warnings = list(luigi_cfg.notes if luigi_cfg is not None else ()) + env_notes
    defaults = SchedulerConfig()
    for key, instead in NOT_HONOURED.items():
        value = getattr(scheduler, key)
        if value == getattr(defaults, key) or (key == "metrics_collector" and value == "none"):
            continue
        shown = _toml_value(value)
        warnings.append(
            f"[scheduler] {key} = {shown} ({sources[f'scheduler.{key}']}): not honoured; {instead}"
        )
    return ResolvedConfig(fed, scheduler, sources, luigi_cfg, tuple(warnings), path)


def resource_env_name(raw: str, known: Mapping[str, Any]) -> str:
    """``FED_RESOURCES_<NAME>``'s resource: a name already set in a lower layer when it matches
    without regard to case (``FED_RESOURCES_HIVEDB`` sets ``HiveDB``), else ``<name>`` lowercased."""
    for name in known:
        if name.lower() == raw.lower():
            return name
    return raw.lower()


def mask_secrets(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host`` (store URLs in ``config show``)."""
    return re.sub(r"(://[^/@:\s]*:)[^/@\s]*@", r"\1***@", text)


def _from_text(name: str, value: Any) -> Any:
    """Env values are text; the router's numeric keys are converted here, the rest stays as given."""
    if isinstance(value, str) and name in (
        "timeout",
        "health_timeout",
        "relay_interval",
        "max_message_bytes",
    ):
        try:
            return int(value) if name == "max_message_bytes" else float(value)
        except ValueError:
            return value  # validation reports it with the key
    return value


def _dump_toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables:
        if isinstance(value, dict):
            lines.append("")
            lines.append(f"[{_toml_key(key)}]")
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        else:
            for entry in value:
                lines.append("")
                lines.append(f"[[{_toml_key(key)}]]")
                lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in entry.items())
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
