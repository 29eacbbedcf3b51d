"""The wire format: ZeroMQ multipart frames carrying msgpack envelopes.

See ``docs/wire.md`` for the full description.  In short:

request, client DEALER -> server ROUTER::

    [routing_key, body]            routing_key: UTF-8 task id, or b"" (no single owner)
    body = msgpack [VERSION, req_id, method, kwargs, meta]

A hop that forwards (the router) keeps the sender's identity frames in
front, so a shard sees ``[peer, *hops, routing_key, body]`` and answers
``[peer, *hops, reply_body]``.

reply::

    body = msgpack [VERSION, req_id, OK, result]
         | msgpack [VERSION, req_id, ERR, {"code": str, "message": str}]

``meta`` is a map for what travels beside the arguments: the caller's
identity (``"caller"``), an ownership epoch, a deadline.  Unknown meta keys are
ignored so the envelope can grow without a version bump.

router -> shard, a request may carry a sixth element, the router's *order stamp*::

    body = msgpack [VERSION, req_id, method, kwargs, meta, stamp]

an integer that grows with every request the router sends to any shard (see
:func:`add_stamp`).  A shard numbers the events a request causes from it on, so
the order in which tasks were created or entered a status is one order over all
shards, as in one scheduler.  The router appends it to a client's body without
decoding it, and accepts no stamp from a client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from federation.errors import FederationError, ProtocolError

VERSION = 1
OK = 0
ERR = 1

#: default cap for one message, enforced with ZMQ_MAXMSGSIZE on every socket that
#: accepts requests (an oversized message disconnects the sender) and checked again here.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_HOPS = 8
#: first frame of a router's bundle to a shard: ``[BUNDLE, tag, key, body, tag, key, body, ...]``,
#: the requests of one router turn for that shard in one ZeroMQ message (``shard.server``
#: answers each as if it came alone; ``router.server.ZmqShardPool.flush_sends``)
BUNDLE = b"\x00bundle"


@dataclass(slots=True)
class Request:
    req_id: int
    method: str
    kwargs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    #: the router's order stamp (router -> shard only), or None
    stamp: int | None = None


@dataclass(slots=True)
class Reply:
    req_id: int
    ok: bool
    result: Any = None
    error: dict[str, str] | None = None


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode_request(
    req_id: int, method: str, kwargs: dict[str, Any], meta: dict[str, Any] | None = None
) -> bytes:
    try:
        return msgpack.packb([VERSION, req_id, method, kwargs, meta or {}], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"cannot encode arguments of {method}: {e}") from e


def decode_request(body: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Request:
    """Parse a request body; every problem becomes a :class:`ProtocolError`."""
    if len(body) > max_bytes:
        raise ProtocolError(
            f"request of {len(body)} bytes exceeds the limit of {max_bytes}", code="too_large"
        )
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types on junk
        raise ProtocolError(f"body is not valid msgpack: {type(e).__name__}: {e}", code="bad_msgpack") from e
    if not isinstance(msg, list) or len(msg) not in (5, 6):
        raise ProtocolError("request must be a msgpack array [version, req_id, method, kwargs, meta]")
    version, req_id, method, kwargs, meta = msg[:5]
    stamp = msg[5] if len(msg) == 6 else None
    if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 0):
        raise ProtocolError("the order stamp must be a non-negative integer")
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version!r} (this server speaks {VERSION})")
    if not isinstance(req_id, int) or isinstance(req_id, bool):
        raise ProtocolError("req_id must be an integer")
    if not isinstance(method, str) or not method:
        raise ProtocolError("method must be a non-empty string")
    if not isinstance(kwargs, dict):
        raise ProtocolError("kwargs must be a map with string keys")
    for k in kwargs:  # (a plain loop: every request passes here)
        if type(k) is not str:
            raise ProtocolError("kwargs must be a map with string keys")
    if not isinstance(meta, dict):
        raise ProtocolError("meta must be a map")
    return Request(req_id, method, kwargs, meta, stamp)


#: the room a stamp leaves for the events of one request (a shard numbers them stamp+1, +2, ...)
STAMP_SHIFT = 16
_FIXARRAY_5 = 0x95


def add_stamp(body: bytes, stamp: int) -> bytes:
    """``body`` (a 5-element request) with the order ``stamp`` appended, without decoding it.

    A request is a msgpack fixarray of 5 (first byte 0x95); the stamped one is the same bytes
    under a fixarray of 6 with the stamp after them.  A body that is not a 5-element array is
    returned unchanged (the shard refuses it anyway)."""
    if not body or body[0] != _FIXARRAY_5:
        return body
    return b"\x96" + body[1:] + msgpack.packb(stamp)


def peek_req_id(body: bytes) -> int:
    """Best effort: the req_id of a body that failed to decode, or -1."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
        if (
            isinstance(msg, list)
            and len(msg) > 1
            and isinstance(msg[1], int)
            and not isinstance(msg[1], bool)
        ):
            return msg[1]
    except Exception:
        pass
    return -1


def peek_header(body: bytes) -> tuple[int, str] | None:
    """``(req_id, method)`` of a request body without decoding its arguments, or None if malformed.

    The router's hot path: a single-task call is placed by its routing frame and its body passed
    through to the shard, so only the envelope's head is read here.
    """
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(body), 1))
        unpacker.feed(body)
        if unpacker.read_array_header() != 5 or unpacker.unpack() != VERSION:
            return None
        req_id = unpacker.unpack()
        method = unpacker.unpack()
    except Exception:
        return None
    if not isinstance(req_id, int) or isinstance(req_id, bool) or not isinstance(method, str):
        return None
    return req_id, method


def encode_ok(req_id: int, result: Any) -> bytes:
    return msgpack.packb([VERSION, req_id, OK, result], use_bin_type=True)


def encode_error(req_id: int, err: FederationError | dict[str, str]) -> bytes:
    payload = err.to_wire() if isinstance(err, FederationError) else err
    return msgpack.packb([VERSION, req_id, ERR, payload], use_bin_type=True)


def decode_reply(body: bytes) -> Reply:
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as e:
        raise ProtocolError(f"reply is not valid msgpack: {e}", code="bad_reply") from e
    if not isinstance(msg, list) or len(msg) != 4 or msg[0] != VERSION or msg[2] not in (OK, ERR):
        raise ProtocolError(f"malformed reply envelope: {msg!r:.200}", code="bad_reply")
    _, req_id, status, payload = msg
    if status == OK:
        return Reply(req_id, True, result=payload)
    return Reply(
        req_id,
        False,
        error=payload if isinstance(payload, dict) else {"code": "bad_reply", "message": str(payload)},
    )


def routing_key(kwargs: dict[str, Any]) -> bytes:
    """The routing frame of a request: the task id it is about, or b"" when there is none."""
    task_id = kwargs.get("task_id")
    if isinstance(task_id, str):
        return task_id.encode("utf-8")
    return b""
