"""``shard.federated.FederatedCore`` in process: its contract with the core, and its change feed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shard.federated
from federation.config import SchedulerConfig
from federation.placement import Placement
from shard.federated import FederatedCore
from shard.scheduler import SchedulerCore

PLACEMENT = Placement({"default": ["s0", "s1"]})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ids_for(shard: str, n: int, family: str = "ns.T", start: int = 0) -> list[str]:
    """``n`` Luigi-like task ids that ``PLACEMENT`` gives to ``shard``."""
    out: list[str] = []
    i = start
    while len(out) < n:
        tid = f"{family}_{i}_0123456789"
        if PLACEMENT.owner(tid) == shard:
            out.append(tid)
        i += 1
    return out


def fed_core(shard: str = "s0", **config: object) -> tuple[FederatedCore, Clock]:
    clock = Clock()
    core = SchedulerCore(SchedulerConfig(**config), clock=clock)  # type: ignore[arg-type]
    return FederatedCore(core, shard, PLACEMENT, clock=clock), clock


# -- the contract with the core ---------------------------------------------------------------------


def test_federated_uses_only_the_public_surface_of_the_core() -> None:
    """No ``<anything>.core._x`` or ``core._x`` in shard/federated.py: only the core's public hooks."""
    tree = ast.parse(Path(shard.federated.__file__).read_text())
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            if name == "core":
                private.append(f"line {node.lineno}: core.{node.attr}")
    assert private == []


def test_private_names_are_not_forwarded_to_the_core() -> None:
    fed, _ = fed_core()
    fed.add_task(task_id=ids_for("s0", 1)[0], worker="w")  # Luigi's methods are forwarded
    assert fed.count_pending(worker="w")["n_pending_tasks"] == 1
    with pytest.raises(AttributeError):
        fed._tasks  # noqa: B018
