"""The ``[tui]`` section: refresh, limits and the header's warning/critical thresholds.

It can live in ``federation.toml`` beside the federation's own tables (only
``[tui]`` is read here) or in a file of its own.  Unknown keys are refused and
every problem is reported at once, with the file and the key.  Command-line
flags (``--refresh``, ``--readonly``) are applied on top with
:meth:`TuiConfig.replace`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from federation.config import coerce, read_toml
from federation.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TuiConfig:
    """Settings of ``fedctl tui``; every threshold can be turned off with 0."""

    #: seconds between two polls (counted from the end of one poll to the start of the next)
    refresh: float = 2.0
    #: seconds one call to the router may take before the header says it is unreachable
    timeout: float = 3.0
    #: hide every action that changes the federation (re-enable, forgive, mark done, pause)
    readonly: bool = False
    #: ``max_shown_tasks`` sent with each per-status ``task_list``; above it the view asks to narrow
    max_tasks: int = 5000
    #: rows the task table shows at most after filtering (the rest is counted, not drawn)
    max_rows: int = 1000
    #: nodes drawn at most in each dependency tree of the task detail
    max_tree_nodes: int = 500
    #: throughput window for "done/min", in seconds
    rate_window: float = 60.0
    #: FAILED + DISABLED tasks at which the header turns warning / critical
    failed_warn: int = 1
    failed_critical: int = 100
    #: new FAILED + DISABLED tasks since the last refresh that count as "failures rising" (warning)
    rising_warn: int = 1
    #: seconds without any task finishing while work is pending before a warning / critical
    stall_warn: float = 300.0
    stall_critical: float = 1800.0
    #: round-trip latency (router or shard) at which the header turns warning / critical
    latency_warn_ms: float = 500.0
    latency_critical_ms: float = 2000.0
    #: a worker not seen for this long is shown as a fault
    worker_stale: float = 30.0

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "") -> TuiConfig:
        """Build from the parsed ``[tui]`` table; all problems reported together."""
        problems: list[str] = []
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in known:
                problems.append(f"[tui] unknown key {key!r} (known: {', '.join(sorted(known))})")
                continue
            try:
                values[name] = coerce(known[name].type, raw)
            except (TypeError, ValueError) as e:
                problems.append(f"[tui] {key}: {e}")
        if problems:
            raise ConfigError(problems, source=source)
        config = cls(**values)
        config.validate(source=source)
        return config

    def validate(self, *, source: str = "") -> None:
        problems = []
        if self.refresh <= 0:
            problems.append(f"[tui] refresh must be > 0 seconds, got {self.refresh:g}")
        if self.timeout <= 0:
            problems.append(f"[tui] timeout must be > 0 seconds, got {self.timeout:g}")
        for name in ("max_tasks", "max_rows", "max_tree_nodes"):
            if getattr(self, name) < 1:
                problems.append(f"[tui] {name} must be >= 1, got {getattr(self, name)}")
        if self.rate_window <= 0:
            problems.append(f"[tui] rate_window must be > 0 seconds, got {self.rate_window:g}")
        for name in (
            "failed_warn",
            "failed_critical",
            "rising_warn",
            "stall_warn",
            "stall_critical",
            "latency_warn_ms",
            "latency_critical_ms",
            "worker_stale",
        ):
            if getattr(self, name) < 0:
                problems.append(f"[tui] {name} must be >= 0 (0 turns it off), got {getattr(self, name)}")
        if problems:
            raise ConfigError(problems, source=source)

    def replace(self, **changes: Any) -> TuiConfig:
        """A copy with ``changes`` applied (None values are ignored, so unset flags keep the file's value)."""
        config = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        config.validate(source="command line")
        return config


def load_tui_config(path: str | None) -> TuiConfig:
    """The ``[tui]`` table of a TOML file (other tables are ignored); defaults when ``path`` is None."""
    if not path:
        return TuiConfig()
    section = read_toml(path).get("tui", {})
    if not isinstance(section, dict):
        raise ConfigError("[tui] must be a table", source=path)
    section = {k: v for k, v in section.items() if k != "contexts"}  # read by load_contexts
    return TuiConfig.from_mapping(section, source=path)


@dataclass(frozen=True, slots=True)
class Context:
    """A federation the TUI can switch to with ``:ctx NAME``."""

    name: str
    #: the router's ZeroMQ endpoint
    router: str
    #: its federation.toml, when known: the shards' stores (shown while a shard is down) and, next to
    #: it, ``logs/`` of ``fedctl up``
    config: str | None = None

    @property
    def log_dir(self) -> Path | None:
        if not self.config:
            return None
        return Path(self.config).resolve().parent / "logs"


def _store_of(sid: str, url: Any, schema: Any) -> tuple[str | None, str | None]:
    """What a shard reports as (backend, location), worked out from its ``[[shards]]`` entry."""
    if not isinstance(url, str):
        return None, None
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else url
        return "sqlite", path
    if url.startswith("postgres"):
        default = "fed_" + "".join(c if c.isalnum() or c == "_" else "_" for c in sid)
        return "postgresql", f"schema {schema if isinstance(schema, str) and schema else default}"
    return None, None


def shard_stores(path: str | None) -> dict[str, tuple[str | None, str | None]]:
    """shard id -> (backend, location) from the ``[[shards]]`` of a federation.toml (empty when none)."""
    if not path:
        return {}
    shards = read_toml(path).get("shards")
    out: dict[str, tuple[str | None, str | None]] = {}
    for entry in shards if isinstance(shards, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            store = _store_of(entry["id"], entry.get("store"), entry.get("schema"))
            if store != (None, None):
                out[entry["id"]] = store
    return out


def load_contexts(path: str | None, current: str) -> tuple[Context, ...]:
    """The federation on show (named ``current``, or after the context with its router) and the
    ones named in ``[tui.contexts]``: ``NAME = "tcp://host:5555"`` or
    ``NAME = {router = "tcp://...", config = "path/to/federation.toml"}`` (relative to the file)."""
    data = read_toml(path) if path else {}
    own_config = path if path and isinstance(data.get("shards"), list) else None
    raw = (data.get("tui") or {}).get("contexts", {}) if isinstance(data.get("tui"), dict) else {}
    if not isinstance(raw, dict):
        raise ConfigError("[tui.contexts] must be a table of NAME = endpoint", source=path or "")
    problems: list[str] = []
    named: list[Context] = []
    for name, value in raw.items():
        if isinstance(value, str):
            value = {"router": value}
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("router"), str)
            or "://" not in value["router"]
        ):
            problems.append(f"[tui.contexts] {name}: give a router endpoint such as tcp://host:5555")
            continue
        unknown = set(value) - {"router", "config"}
        if unknown:
            problems.append(
                f"[tui.contexts] {name}: unknown key {sorted(unknown)[0]!r} (known: config, router)"
            )
            continue
        config = value.get("config")
        if config is not None and path:
            config = str(Path(path).parent / config)
        named.append(Context(str(name), value["router"], config))
    if problems:
        raise ConfigError(problems, source=path or "")
    here = next((c for c in named if c.router == current), None)
    if here is not None:
        if here.config is None and own_config:
            named[named.index(here)] = Context(here.name, here.router, own_config)
        return tuple(named)
    return (Context("current", current, own_config), *named)
