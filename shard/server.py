"""The shard process: Luigi's scheduler core on a ZeroMQ ROUTER socket, with group commit.

One loop, one thread: take every request that is waiting (up to
``batch_max``), apply each to the in-memory core, commit everything they
changed in one store transaction, and only then send the replies.  A reply
therefore never acknowledges a change that a ``kill -9`` could lose.

Bad input never stops the loop: malformed frames, junk bytes, unknown
methods and bad arguments get an error reply (when there is someone to reply
to) and change nothing; oversized messages are cut off by ``MAXMSGSIZE``
before they reach us.  If a commit fails, every request of the batch gets a
``storage`` error and the core is rebuilt from the store, so memory never
runs ahead of what is durable.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from federation import transport, wire
from federation.auth import shard_allows
from federation.errors import (
    BadArgumentsError,
    FederationError,
    ProtocolError,
    ShardLockedError,
    StorageError,
    UnknownMethodError,
)
from shard.metrics import ShardMetrics

log = logging.getLogger("shard.server")

MAX_FRAMES = 2 + wire.MAX_HOPS + 1


class ShardServer:
    """Serves one :class:`shard.scheduler.SchedulerCore` backed by one store.

    ``bind=None`` builds it without a socket, for callers in the same process (the router's
    in-process shard pool in tests): :meth:`handle_batch` is the same apply-commit-reply step
    that :meth:`run_once` runs on the messages of the socket.
    """

    def __init__(
        self,
        shard_id: str,
        bind: str | None,
        core: Any,
        store: Any,
        *,
        prune_interval: float = 60.0,
        batch_max: int = 2000,
        max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
        methods: Iterable[str] | None = None,
        extra_methods: dict[str, Callable[..., Any]] | None = None,
        version: str = "",
        curve: Any = None,
    ) -> None:
        self.shard_id = shard_id
        self.core = core
        self.store = store
        self.prune_interval = prune_interval
        self.batch_max = batch_max
        self.max_message_bytes = max_message_bytes
        self.version = version
        self.log = logging.LoggerAdapter(log, {"shard": shard_id})
        names = core.RPC_METHODS if methods is None else methods
        self._methods: dict[str, Callable[..., Any]] = {name: getattr(core, name) for name in names}
        self._methods["shard_info"] = self.shard_info
        self._methods["prune_history"] = self.prune_history
        self._methods.update(extra_methods or {})
        self.metrics = ShardMetrics(shard_id, set(self._methods))
        self._ctx: zmq.Context | None = None
        self.sock: zmq.Socket | None = None
        self.endpoint = "inproc"
        #: a federation.keys.ServerCurve: only the router (all methods) and admin keys (reads) get in
        self.curve = curve
        self._gate: Any = None
        if bind is not None:
            self._ctx = zmq.Context()
            if curve is not None:
                self._gate = curve.start(self._ctx)
            try:
                self.sock = transport.bind_router(
                    self._ctx, bind, max_message_bytes=max_message_bytes, curve=curve
                )
            except BaseException:
                if self._gate is not None:
                    self._gate.stop()
                raise
            self.endpoint = transport.last_endpoint(self.sock)
        #: the get_work summaries' frames (``_summary_frame``): this process's token, their number
        self._frame_token = os.urandom(8).hex()
        self._frame_n = 0
        self._stamped: int | None = None
        self._index = 0
        self._stop = threading.Event()
        self.lost_ownership: ShardLockedError | None = None
        self._next_prune = time.monotonic() + prune_interval
        self.started = time.time()
        self.metrics.up_since.labels(shard_id).set(self.started)

    # -- lifecycle -----------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """First SIGTERM/SIGINT drains (finishes the batch in hand, then stops); the second exits now."""

        def handler(signum: int, _frame: Any) -> None:
            if self._stop.is_set():
                raise SystemExit(128 + signum)
            self.log.info("shard %s: signal %d, draining", self.shard_id, signum)
            self._stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        if self._gate is not None:
            self._gate.stop()
        if self._ctx is not None:
            self._ctx.term()

    def serve_forever(self) -> None:
        self.log.info(
            "shard %s serving on %s (store %s %s)",
            self.shard_id,
            self.endpoint,
            getattr(self.store, "backend", "?"),
            getattr(self.store, "location", "?"),
        )
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                wait_ms = max(0, min(200, int((self._next_prune - time.monotonic()) * 1000)))
                if poller.poll(wait_ms):
                    self.run_once()
                if time.monotonic() >= self._next_prune:
                    self._prune()
        finally:
            self.log.info("shard %s stopped", self.shard_id)

    # -- one batch -----------------------------------------------------------
    def run_once(self) -> int:
        """Handle every request waiting now (up to batch_max): apply, commit once, reply."""
        assert self.sock is not None, "run_once needs a bound socket (bind=None serves handle_batch)"
        batch: list[list[bytes]] = []
        users: list[str | None] | None = None
        #: senders of a bundle (the router): their replies go back bundled too
        bundlers: set[bytes] = set()
        if self.curve is None:
            for _ in range(self.batch_max):
                if not transport.has_input(self.sock):
                    break
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(frames) > 2 and frames[1] == wire.BUNDLE:
                    batch.extend(unbundle(frames))
                    bundlers.add(frames[0])
                else:
                    batch.append(frames)
        else:
            users = []
            for _ in range(self.batch_max):
                got = transport.recv_frames_user(self.sock) if transport.has_input(self.sock) else None
                if got is None:
                    break
                frames, user = got
                if len(frames) > 2 and frames[1] == wire.BUNDLE:
                    requests = unbundle(frames)
                    batch.extend(requests)
                    bundlers.add(frames[0])
                    users.extend([user] * len(requests))  # each request checked on its own
                else:
                    batch.append(frames)
                    users.append(user)
        if not batch:
            return 0
        replies = self.handle_batch(batch, users)
        if bundlers:
            replies = bundle_replies(replies, bundlers)
        for frames in replies:
            transport.send_frames(self.sock, frames)
        return len(batch)

    def handle_batch(
        self, batch: list[list[bytes]], users: list[str | None] | None = None
    ) -> list[list[bytes]]:
        """Apply every request of ``batch`` (ROUTER frames ``[*route, key, body]``), commit once,
        and return the reply frames ``[*route, reply]``, one per request, in order; the first
        reply to a stamped request (the router's) carries the changed get_work summaries as a third
        frame (``_summary_frame``).

        ``users``: the principal of each request (CURVE's ``User-Id``), checked by
        :func:`federation.auth.shard_allows`; None on a shard without CURVE."""
        t_batch = time.perf_counter()
        self._stamped = None
        replies = []
        for i, frames in enumerate(batch):
            self._index = i
            replies.append(self._handle(frames) if users is None else self._handle(frames, users[i]))
        self.metrics.observe(self.metrics.batch_size, len(replies))
        commit_error = self._commit()
        # the router's table of get_work summaries: what changed rides on the batch's first reply
        # to the router (a stamped request), ahead of every other reply of the batch
        first = self._stamped
        frame = self._summary_frame() if first is not None else None
        out: list[list[bytes]] = []
        for i, (route, req_id, result, err, method) in enumerate(replies):
            err = commit_error or err
            self.metrics.request(method, err.code if err else "ok")
            try:
                body = wire.encode_error(req_id, err) if err else wire.encode_ok(req_id, result)
            except Exception as e:  # a result that msgpack cannot carry is our bug; say so, keep serving
                self.log.error("shard %s: cannot encode reply: %s", self.shard_id, e, exc_info=True)
                body = wire.encode_error(req_id, FederationError(f"cannot encode reply: {e}"))
            if i == first and frame is not None:
                out.append([*route, body, frame])
            else:
                out.append([*route, body])
        self.metrics.observe(self.metrics.batch_seconds, time.perf_counter() - t_batch)
        return out

    def _summary_frame(self) -> bytes | None:
        """``[token, n, whole, prunes, {worker: summary}]``: the workers whose get_work summary
        changed (``SchedulerCore.worker_summaries``), numbered so the router sees a gap; None if
        nothing changed or the core keeps no summaries."""
        fn = getattr(self.core, "worker_summaries", None)
        if fn is None:
            return None
        try:
            whole, entries = fn()
            if not whole and not entries:
                return None
            self._frame_n += 1
            prunes = bool(getattr(self.core, "prunes_on_get_work", False))
            return wire.pack([self._frame_token, self._frame_n, whole, prunes, entries])
        except Exception:
            # never worth a reply: the router sees the gap and asks for every summary again
            self.log.error("shard %s: cannot build the worker summaries", self.shard_id, exc_info=True)
            self._frame_n += 1
            return None

    def _handle(
        self, frames: list[bytes], user: Any = False
    ) -> tuple[list[bytes], int, Any, FederationError | None, str]:
        if len(frames) < 3 or len(frames) > MAX_FRAMES:
            self.log.warning(
                "shard %s: dropped a message of %d frames (expected [routing_key, body])",
                self.shard_id,
                len(frames) - 1,
            )
            err = ProtocolError(
                f"expected frames [routing_key, body], got {len(frames) - 1} frame(s)", code="bad_frames"
            )
            return [frames[0]], wire.peek_req_id(frames[-1]) if len(frames) > 1 else -1, None, err, "(bad)"
        route, body = frames[:-2], frames[-1]
        try:
            req = wire.decode_request(body, self.max_message_bytes)
        except ProtocolError as e:
            self.log.warning("shard %s: bad request: %s", self.shard_id, e)
            return route, wire.peek_req_id(body), None, e, "(bad)"
        if user is not False:
            denied = shard_allows(user, req.method)
            if denied is not None:
                self.log.warning("shard %s: refused %s from %s: %s", self.shard_id, req.method, user, denied)
                return route, req.req_id, None, denied, req.method
        fn = self._methods.get(req.method)
        if fn is None:
            self.log.warning("shard %s: unknown method %r", self.shard_id, req.method)
            return route, req.req_id, None, UnknownMethodError(f"unknown method {req.method!r}"), req.method
        if req.stamp is not None:
            self.core.observe_stamp(req.stamp)
            if self._stamped is None:
                self._stamped = self._index
        try:
            return route, req.req_id, fn(**req.kwargs), None, req.method
        except (TypeError, ValueError) as e:
            self.log.warning("shard %s: bad arguments to %s: %s", self.shard_id, req.method, e)
            return route, req.req_id, None, BadArgumentsError(f"{req.method}: {e}"), req.method
        except FederationError as e:
            return route, req.req_id, None, e, req.method
        except Exception as e:
            self.log.error("shard %s: %s failed", self.shard_id, req.method, exc_info=True)
            return (
                route,
                req.req_id,
                None,
                FederationError(f"{req.method} failed: {type(e).__name__}: {e}"),
                req.method,
            )

    def _commit(self) -> FederationError | None:
        changes = self.core.collect_changes()
        if changes.is_empty():
            return self._confirm_ownership()
        t0 = time.perf_counter()
        try:
            self.store.commit(changes)
        except ShardLockedError as e:
            # Another process owns the shard now (fenced): nothing here may be acknowledged again.
            self.log.critical("shard %s: lost ownership of its store, stopping: %s", self.shard_id, e)
            self.lost_ownership = e
            self._stop.set()
            return e
        except StorageError as e:
            self.log.error("shard %s: commit failed, rebuilding from the store: %s", self.shard_id, e)
            self._reload()
            return e
        elapsed = time.perf_counter() - t0
        self.metrics.observe(self.metrics.commit_seconds, elapsed)
        return None

    def _confirm_ownership(self) -> FederationError | None:
        """Before answering from memory alone: a process frozen (SIGSTOP) long enough for a standby
        to take over must not answer from its stale state, so the store confirms ownership when it
        has not heard from its database for a while (free otherwise).  Nothing changed in memory, so
        a failure costs only this batch's answers (an error the clients retry)."""
        try:
            self.store.confirm_ownership()
        except ShardLockedError as e:
            self.log.critical("shard %s: lost ownership of its store, stopping: %s", self.shard_id, e)
            self.lost_ownership = e
            self._stop.set()
            return e
        except StorageError as e:
            self.log.error("shard %s: cannot confirm it still owns its store: %s", self.shard_id, e)
            return e
        return None

    def _reload(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                self.core.restore(self.store.load())
                self.core.collect_changes()
                return
            except ShardLockedError as e:
                self.log.critical("shard %s: lost ownership of its store, stopping: %s", self.shard_id, e)
                self.lost_ownership = e
                self._stop.set()
                return
            except StorageError as e:
                self.log.error("shard %s: reload failed (retry in %.1fs): %s", self.shard_id, delay, e)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _prune(self) -> None:
        self._next_prune = time.monotonic() + self.prune_interval
        try:
            self.core.prune()
        except Exception:
            self.log.error("shard %s: prune failed", self.shard_id, exc_info=True)
        self._commit()

    # -- federation-level methods ---------------------------------------------
    def prune_history(self, before: float, limit: int = 20_000) -> dict[str, Any]:
        """Delete this shard's oldest history events older than ``before`` (epoch seconds), at most
        ``limit`` per call (``more`` says to call again), durably before the reply."""
        if (
            isinstance(before, bool)
            or not isinstance(before, (int, float))
            or before != before
            or before in (float("inf"), float("-inf"))
        ):
            raise TypeError(f"before must be a time in epoch seconds, got {before!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
            raise TypeError(f"limit must be an integer from 1 to 1000000, got {limit!r}")
        deleted = self.store.prune_events(float(before), limit)
        if deleted:
            self.log.info("shard %s: pruned %d history events before %s", self.shard_id, deleted, before)
        return {"deleted": deleted, "more": deleted >= limit}

    def shard_info(self) -> dict[str, Any]:
        """Identity and health of this shard (used by the router's federation_health)."""
        return {
            "shard_id": self.shard_id,
            "endpoint": self.endpoint,
            "backend": getattr(self.store, "backend", "?"),
            "location": getattr(self.store, "location", "?"),
            "version": self.version,
            "started": self.started,
        }


def unbundle(frames: list[bytes]) -> list[list[bytes]]:
    """The requests of a router's bundle ``[identity, BUNDLE, tag, key, body, ...]``, each as
    ``[identity, tag, key, body]`` (as it would have come alone).  A bundle that is not whole
    triples is one bad request (answered ``bad_frames``, nothing applied)."""
    identity, rest = frames[0], frames[2:]
    if not rest or len(rest) % 3:
        return [[identity, wire.BUNDLE]]  # too few frames for a request: bad_frames
    return [[identity, rest[i], rest[i + 1], rest[i + 2]] for i in range(0, len(rest), 3)]


def bundle_replies(replies: list[list[bytes]], bundlers: set[bytes]) -> list[list[bytes]]:
    """The replies ``[identity, tag, body(, summaries)]`` to a sender of bundles, in one message
    ``[identity, BUNDLE, tag, body, summaries or b"", ...]`` in their order, sent where its
    first reply was; the others' replies as they are."""
    out: list[list[bytes]] = []
    bundles: dict[bytes, list[bytes]] = {}
    for frames in replies:
        identity = frames[0]
        if identity not in bundlers or len(frames) not in (3, 4):
            out.append(frames)
            continue
        found = bundles.get(identity)
        if found is None:
            found = bundles[identity] = [identity, wire.BUNDLE]
            out.append(found)
        found.extend((frames[1], frames[2], frames[3] if len(frames) == 4 else b""))
    return out
