"""The federation's own shard methods refuse bad arguments with a clear error and change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation import wire
from federation.config import FederationConfig, RouterConfig, SchedulerConfig, ShardSpec
from shard.app import build_federated_shard


@pytest.fixture
def shard(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = FederationConfig(
        shards=(ShardSpec("s0", "tcp://127.0.0.1:1", f"sqlite:///{tmp_path / 's0.db'}", None),),
        groups={"default": ("s0",)},
        namespaces={},
        default_group="default",
        router=RouterConfig(),
        scheduler=SchedulerConfig(),
    )
    server = build_federated_shard(config, "s0", in_process=True)
    try:
        yield server
    finally:
        server.store.close()
        server.close()


def call(server, method: str, **kwargs):  # type: ignore[no-untyped-def]
    [reply] = server.handle_batch([[b"client", b"", wire.encode_request(1, method, kwargs)]])
    return wire.decode_reply(reply[-1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"since": 0, "limit": 0},
        {"since": 0, "limit": -5},
        {"since": 0, "limit": "10"},
        {"since": 0, "limit": True},
        {"since": "0"},
    ],
)
def test_fed_changes_with_a_bad_cursor_or_limit_is_bad_arguments(shard, kwargs) -> None:  # type: ignore[no-untyped-def]
    assert call(shard, "add_task", task_id="A", worker="w").ok
    before = call(shard, "fed_changes", since=0).result
    reply = call(shard, "fed_changes", **kwargs)
    assert not reply.ok and reply.error["code"] == "bad_arguments", reply
    assert call(shard, "fed_changes", since=0).result == before


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("fed_offer", {"worker": "w", "external_used_resources": {"r": "x"}}),
        ("fed_offer", {"worker": 7}),
        ("fed_get_work", {"worker": "w", "external_used_resources": [1]}),
        ("fed_task_list", {"status": "PENDING", "upstream_status": "", "max_shown_tasks": "many"}),
        ("fed_task_list", {"count_only": True, "status": 5}),
        ("fed_graph_nodes", {"task_ids": ["A", 1], "include_done": False}),
        ("fed_touch_workers", {"workers": "w"}),
        ("fed_touch_workers", {"workers": [1]}),
        ("fed_first_mention", {"mentions": {"A": [1.0]}}),
        ("fed_first_mention", {"mentions": {"A": ["x", 1]}}),
        ("fed_first_mention", {"mentions": [["A", 1.0, 2]]}),
        ("fed_add_stakeholders", {"stakeholders": {"A": ["w"]}}),
        ("fed_add_stakeholders", {"stakeholders": [["A", ["w"]]]}),
        ("fed_add_stakeholders", {"stakeholders": [["A", [["w", "yesterday"]]]]}),
        ("fed_add_stakeholders", {"stakeholders": [["A", [["w", True]]]]}),
        ("fed_batch_apply", {"effects": [["explode", "b1", 1]]}),
        ("fed_batch_apply", {"effects": [["status", "b1", "NOT_A_STATUS"]]}),
        ("fed_batch_apply", {"effects": [["status", "b1", "DONE", "x"]]}),
        ("fed_batch_apply", {"effects": [["decrease", "b1", [1]]]}),
        ("fed_batch_apply", {"effects": "reset"}),
        ("fed_batch_apply", {"effects": [["runner", "b1", "first"]]}),
        ("fed_batch_apply", {"effects": [["runner", "b1"]]}),
        ("fed_batch_apply", {"effects": [["status", "b1", "FAILED", 1, 2]]}),
        ("fed_batch_claim", {"worker": "w", "batch_id": "b", "task_ids": "A", "remote": True}),
        ("fed_batch_claim", {"worker": "w", "batch_id": "b", "task_ids": ["A"], "remote": "yes"}),
        ("fed_batch_claim", {"worker": "w", "batch_id": "b", "task_ids": ["A"], "remote": True, "first": 5}),
        (
            "fed_batch_claim",
            {
                "worker": "w",
                "batch_id": "b",
                "task_ids": ["A"],
                "remote": True,
                "first": 5,
                "positions": [-1],
            },
        ),
        ("fed_batch_candidates", {"family": "F", "unbatched": {}, "resources": {}, "after": [1, 2]}),
        ("fed_batch_candidates", {"family": "F", "unbatched": [], "resources": {}, "after": [1, 2, 3]}),
        (
            "fed_batch_candidates",
            {"family": "F", "unbatched": {}, "resources": {}, "after": [1, 2, 3], "limit": -1},
        ),
        ("fed_batch_release", {"batch_id": 5}),
        # fed_relay checks every part before it applies any: a good part before a bad one is
        # not applied either (the task list stays as it was)
        ("fed_relay", {"raises": {"A": 9}, "stakeholders": {"A": ["w"]}}),
        ("fed_relay", {"mentions": {"A": [1.0, 1]}, "status": "A"}),
        ("fed_relay", {"raises": {"A": "high"}}),
        ("fed_relay", {"forget": [1], "raises": {"A": 9}}),
        ("fed_relay", {"raises": {"A": 9}, "mentions": {"A": [1.0]}}),
        ("fed_relay", {"raises": {"A": 9}, "surprise": 1}),
        ("fed_relay", {"raises": {"A": 9}, "updates": [["B", "DONE", 1.0, "seven"]]}),
        ("fed_relay", {"raises": {"A": 9}, "updates": {"B": "DONE"}}),
    ],
)
def test_other_fed_methods_refuse_bad_arguments(shard, method: str, kwargs: dict) -> None:  # type: ignore[no-untyped-def]
    assert call(shard, "add_task", task_id="A", worker="w").ok
    before = call(shard, "task_list", status="", upstream_status="").result
    reply = call(shard, method, **kwargs)
    assert not reply.ok and reply.error["code"] == "bad_arguments", reply
    assert call(shard, "task_list", status="", upstream_status="").result == before
