"""Luigi's ``[resources]`` across shards: what each shard's RUNNING tasks hold, and one token.

Shards report their running resource usage with every ``fed_get_work`` and ``fed_changes``
reply.  A ``get_work`` that could hand out a task needing resources holds the federation-wide
token and tells the shard what the other shards use, so the sum never exceeds Luigi's
capacities.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ShardUsage:
    usage: dict[str, int] = field(default_factory=dict)
    #: the shard may hold an unfinished task that needs resources (True until it says otherwise)
    pending: bool = True
    #: bumped by every add_task with resources forwarded to the shard
    version: int = 0


class ResourceArbiter:
    def __init__(self, shard_ids: list[str], defer: Callable[[Callable[[], None]], None]) -> None:
        self.shards = {sid: ShardUsage() for sid in shard_ids}
        self._defer = defer
        self._busy = False
        self._waiters: list[Callable[[], None]] = []

    def version(self, sid: str) -> int:
        return self.shards[sid].version

    def pending(self, sid: str) -> bool:
        return self.shards[sid].pending

    def on_add_task(self, sid: str) -> None:
        """An add_task with resources was forwarded to ``sid``."""
        shard = self.shards[sid]
        shard.pending = True
        shard.version += 1

    def note(self, sid: str, report: dict[str, Any], version: int) -> None:
        """A shard's report (``resources_running``, ``resource_pending``), asked for at ``version``."""
        shard = self.shards[sid]
        usage = report.get("resources_running")
        if isinstance(usage, dict):
            shard.usage = {str(k): int(v) for k, v in usage.items() if isinstance(v, (int, float)) and v > 0}
        pending = report.get("resource_pending")
        # an add_task with resources forwarded after this report was asked for must not be forgotten
        if isinstance(pending, bool) and version == shard.version:
            shard.pending = pending

    def external_usage(self, exclude: str) -> dict[str, int]:
        """Resources in use on every shard but ``exclude`` (last reported; never lower than real)."""
        total: dict[str, int] = defaultdict(int)
        for sid, shard in self.shards.items():
            if sid != exclude:
                for name, amount in shard.usage.items():
                    total[name] += amount
        return dict(total)

    def take(self, resume: Callable[[], None]) -> bool:
        """Take the token, or queue ``resume`` for its next release and return False."""
        if self._busy:
            self._waiters.append(resume)
            return False
        self._busy = True
        return True

    def give(self) -> None:
        self._busy = False
        if self._waiters:
            self._defer(self._waiters.pop(0))

    @property
    def busy(self) -> bool:
        return self._busy or bool(self._waiters)
