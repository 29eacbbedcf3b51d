"""The msgpack envelope: round trips and every kind of malformed input."""

from __future__ import annotations

import math

import msgpack
import pytest

from federation import wire
from federation.errors import (
    BadArgumentsError,
    FederationError,
    ProtocolError,
    RemoteError,
    StorageError,
    error_from_wire,
)


def test_request_round_trip_keeps_luigi_values() -> None:
    kwargs = {
        "task_id": "daily.Load_2026_11_20_orders_ab12cd34ef",
        "max_batch_size": float("inf"),
        "info": [["host", "h"], ["workers", 4]],
        "params": {"date": "2026-11-20", "ß": "ü"},
    }
    req = wire.decode_request(wire.encode_request(7, "add_task", kwargs, {"client": "t"}))
    assert (req.req_id, req.method, req.meta) == (7, "add_task", {"client": "t"})
    assert math.isinf(req.kwargs["max_batch_size"])
    assert req.kwargs["params"] == {"date": "2026-11-20", "ß": "ü"}


def test_reply_round_trip_ok_and_error() -> None:
    ok = wire.decode_reply(wire.encode_ok(3, {"task_id": None, "n_pending_tasks": 2}))
    assert ok.ok and ok.req_id == 3 and ok.result == {"task_id": None, "n_pending_tasks": 2}
    err = wire.decode_reply(wire.encode_error(4, BadArgumentsError("add_task: bad")))
    assert not err.ok and err.error == {"code": "bad_arguments", "message": "add_task: bad"}
    assert isinstance(error_from_wire(err.error), BadArgumentsError)


@pytest.mark.parametrize(
    "body, code",
    [
        (b"\xc1\xff\x00junk", "bad_msgpack"),
        (msgpack.packb([1, 2, "m"]), "bad_request"),  # too short
        (msgpack.packb({"method": "ping"}), "bad_request"),  # a map, not an array
        (msgpack.packb([2, 1, "ping", {}, {}]), "bad_request"),  # unknown version
        (msgpack.packb([1, "x", "ping", {}, {}]), "bad_request"),  # req_id not an int
        (msgpack.packb([1, True, "ping", {}, {}]), "bad_request"),  # bool is not a req_id
        (msgpack.packb([1, 1, "", {}, {}]), "bad_request"),
        (msgpack.packb([1, 1, "ping", [], {}]), "bad_request"),  # kwargs not a map
        (msgpack.packb([1, 1, "ping", {1: 2}, {}]), "bad_msgpack"),  # int map keys refused while decoding
        (msgpack.packb([1, 1, "ping", {}, []]), "bad_request"),  # meta not a map
        (msgpack.packb([1, 1, "ping", {}, {}])[:-2], "bad_msgpack"),  # truncated
    ],
)
def test_bad_requests_raise_protocol_errors(body: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        wire.decode_request(body)
    assert info.value.code == code


def test_non_string_kwargs_keys_are_refused() -> None:
    body = msgpack.packb([1, 1, "ping", {5: "x"}, {}], use_bin_type=True)
    with pytest.raises(ProtocolError):
        wire.decode_request(body)


def test_oversized_request_is_refused_before_decoding() -> None:
    body = wire.encode_request(1, "add_task", {"expl": "x" * 2000})
    with pytest.raises(ProtocolError) as info:
        wire.decode_request(body, max_bytes=1000)
    assert info.value.code == "too_large"


def test_peek_req_id_survives_junk() -> None:
    assert wire.peek_req_id(msgpack.packb([1, 42, 5, 5, 5])) == 42
    assert wire.peek_req_id(b"\xc1") == -1


def test_unencodable_arguments_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        wire.encode_request(1, "add_task", {"x": object()})


def test_routing_key_is_the_task_id() -> None:
    assert wire.routing_key({"task_id": "a.B_1_f"}) == b"a.B_1_f"
    assert wire.routing_key({"worker": "w"}) == b""
    assert wire.routing_key({"task_id": None}) == b""


def test_error_from_wire_maps_codes_and_tolerates_junk() -> None:
    assert isinstance(error_from_wire({"code": "storage", "message": "m"}), StorageError)
    unknown = error_from_wire({"code": "brand_new", "message": "m"})
    assert isinstance(unknown, RemoteError) and unknown.code == "brand_new"
    assert isinstance(error_from_wire("nonsense"), FederationError)


def test_the_router_stamp_travels_without_decoding_the_body() -> None:
    body = wire.encode_request(7, "add_task", {"task_id": "A", "deps": ["B"]}, {"caller": "w"})
    stamped = wire.add_stamp(body, 123 << wire.STAMP_SHIFT)
    req = wire.decode_request(stamped)
    assert (req.req_id, req.method, req.kwargs, req.meta) == (
        7,
        "add_task",
        {"task_id": "A", "deps": ["B"]},
        {"caller": "w"},
    )
    assert req.stamp == 123 << wire.STAMP_SHIFT
    assert wire.decode_request(body).stamp is None
    # junk is passed through unchanged, for the shard to refuse
    assert wire.add_stamp(b"\x01junk", 5) == b"\x01junk"


def test_a_client_cannot_send_a_stamp_or_a_bad_one() -> None:
    body = wire.add_stamp(wire.encode_request(1, "ping", {}), 99)
    # the router's front reads the head of a client's body: a 6-element one is malformed there
    assert wire.peek_header(body) is None
    bad = wire.pack([wire.VERSION, 1, "ping", {}, {}, -3])
    with pytest.raises(ProtocolError, match="stamp"):
        wire.decode_request(bad)
    bad = wire.pack([wire.VERSION, 1, "ping", {}, {}, "x"])
    with pytest.raises(ProtocolError, match="stamp"):
        wire.decode_request(bad)
