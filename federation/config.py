"""Typed configuration.

``SchedulerConfig`` mirrors Luigi's ``[scheduler]`` section (same keys, same
defaults, luigi 3.8.1) and is what every shard core runs with.  The whole
``federation.toml`` (shards, namespace groups, router binds) builds on it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from federation.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Luigi's ``[scheduler]`` settings, with Luigi's defaults."""

    retry_delay: float = 900.0
    remove_delay: float = 600.0
    worker_disconnect_delay: float = 60.0
    state_path: str = "/var/lib/luigi-server/state.pickle"  # accepted for compatibility; the store replaces it
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
    def from_mapping(cls, data: dict[str, Any], *, source: str = "", section: str = "scheduler") -> SchedulerConfig:
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


def _coerce(name: str, typ: Any, raw: Any) -> Any:
    typ = str(typ)
    if name == "resources":
        if not isinstance(raw, dict):
            raise TypeError("must be a table of name = integer")
        out = {}
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"resource {k!r} must be a non-negative integer, got {v!r}")
            out[str(k)] = v
        return out
    if typ.startswith("bool"):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return raw.lower() in ("true", "1", "yes", "on")
        raise TypeError(f"must be a boolean, got {raw!r}")
    if typ.startswith("int"):
        if isinstance(raw, bool):
            raise TypeError(f"must be an integer, got {raw!r}")
        value = int(raw)
        if isinstance(raw, float) and raw != value:
            raise ValueError(f"must be an integer, got {raw!r}")
        return value
    if typ.startswith("float"):
        if isinstance(raw, bool):
            raise TypeError(f"must be a number, got {raw!r}")
        value = float(raw)
        if math.isnan(value):
            raise ValueError("must be a number, got NaN")
        return value
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise TypeError(f"must be a string, got {raw!r}")
    return raw
