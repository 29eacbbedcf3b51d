"""The router's logic, without sockets: one request in, answers out through ``send_front``.

:class:`RouterCore` serves every method by the table of :mod:`router.methods` (``handlers``
maps each kind to one method here), talks to shards only through a
:class:`~router.links.ShardPool`, and keeps its own state in three objects that own it:
:class:`~router.workers.WorkerRegistry`, :class:`~router.relay.Relay` and
:class:`~router.resources.ResourceArbiter`.  :mod:`router.server` runs it on ZeroMQ sockets;
:class:`InProcRouter` runs it on an :class:`~router.links.InProcShardPool` in the caller's
process, with a fake clock, for tests that need no processes and no sleeps.

Nothing here blocks: a request is a :class:`~router.calls.Call` answered by callbacks; work
that must not run inside the callback that caused it goes on the ``soon`` list, run by
:meth:`RouterCore.step` once per loop turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from federation import __version__, wire
from federation.auth import FILTERED_READS, Authorizer, filter_read
from federation.config import FederationConfig
from federation.errors import (
    BadArgumentsError,
    FederationError,
    ProtocolError,
    TransportError,
    UnknownMethodError,
    error_from_wire,
)
from federation.placement import Placement
from router import merge
from router.calls import Call
from router.getwork import GetWork
from router.graph import Graph
from router.links import InProcShardPool, LinkState, ShardHandler, ShardLink, ShardPool
from router.methods import (
    ADD_TASK,
    ALL,
    ANY,
    DEP_GRAPH,
    FORWARD,
    FORWARD_RELAY,
    GET_WORK,
    HEALTH,
    INVERSE_DEP_GRAPH,
    KINDS,
    METHODS,
    ONE_WORKER,
    OWNER,
    PLACEHOLDER_READ,
    RESHARD,
    TASK_LIST,
    UNDECODED,
    WORKER,
    WORKER_LIST,
    Route,
)
from router.metrics import RouterMetrics
from router.relay import Relay
from router.reshard import Resharder, effective_config, record_path
from router.resources import ResourceArbiter
from router.workers import WorkerRegistry

log = logging.getLogger("router.core")

MAX_FRONT_FRAMES = 2 + wire.MAX_HOPS + 1
FORGET_INTERVAL = 30.0
#: a refused call is logged at most once per principal and method in this many seconds
DENIAL_LOG_INTERVAL = 60.0

Gathered = Callable[[list[tuple[str, Any]], list[tuple[str, FederationError]]], None]


class RouterCore:
    """The federation router's logic (see the module docstring)."""

    def __init__(
        self,
        config: FederationConfig,
        send_front: Callable[[list[bytes], bytes], None],
        make_pool: Callable[..., ShardPool],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config = effective_config(config)  # past a resharding's switch: its new placement
        self.config = config
        self.send_front = send_front
        self.clock = clock
        self.metrics = RouterMetrics(set(METHODS))
        self.placement = Placement.from_config(config)
        self.owner = self.placement.owner
        self.timeout = config.router.timeout
        self.health_timeout = config.router.health_timeout
        self.max_graph_nodes = config.scheduler.max_graph_nodes
        self.merge_context = merge.MergeContext(
            self.owner, config.scheduler.max_shown_tasks, config.scheduler.max_graph_nodes
        )
        self.endpoint = ""
        self.http_endpoint: str | None = None
        self.soon: list[Callable[[], None]] = []
        specs = [(spec, config.group_of_shard(spec.id)) for spec in config.shards]
        self.pool = make_pool(
            specs, timeout=self.timeout, defer=self.soon.append, clock=clock, metrics=self.metrics
        )
        self.pool.listener = self
        self.links: dict[str, ShardLink] = self.pool.links
        self.resources = ResourceArbiter(list(self.links), self.soon.append)
        #: a worker silent this long is gone (Luigi's worker pings every second; luigid drops it after
        #: worker_disconnect_delay); the router forgets it and the batches it was handed
        self.workers = WorkerRegistry(
            self.pool, forget_after=4 * config.scheduler.worker_disconnect_delay, home=self.owner
        )
        self.relay = Relay(
            self.pool,
            self.owner,
            self.placement.fingerprint,
            release=self.release,
            on_report=lambda link, report, version: self.resources.note(link.id, report, version),
            report_version=self.resources.version,
            on_workers=self.workers.on_shard_workers,
            on_hosted=self.workers.on_hosted,
            on_deleted=self.workers.unpin,
            on_stakeholders=self.workers.meet_all,
            interval=config.router.relay_interval,
        )
        self._next_forget = clock() + FORGET_INTERVAL
        #: who may call what (docs/security.md); None: an unsecured federation, every call is served
        self.authz: Authorizer | None = authorizer(config)
        self._denials: dict[tuple[str, str], float] = {}
        self.handlers: dict[str, Callable[[Call, Route], None]] = {
            FORWARD: self._on_forward,
            ADD_TASK: self._on_add_task,
            FORWARD_RELAY: self._on_forward_relay,
            GET_WORK: self._on_get_work,
            WORKER: self._on_worker_call,
            ONE_WORKER: self._on_one_worker_call,
            ALL: self._on_all_call,
            WORKER_LIST: self._on_worker_list,
            TASK_LIST: self._on_task_list,
            ANY: self._on_any_call,
            DEP_GRAPH: self._on_graph,
            INVERSE_DEP_GRAPH: self._on_graph,
            HEALTH: self._on_health,
            OWNER: self._on_owner,
            PLACEHOLDER_READ: self._on_placeholder_read,
            RESHARD: lambda call, route: self.reshard.serve(call),
        }
        self.reshard = Resharder(self, record_path(config))
        assert set(self.handlers) == KINDS, "every kind of router.methods has one handler"
        self.metrics.watch(self)

    # -- the loop's side ---------------------------------------------------------------------------
    def step(self, *, timers: bool = True) -> None:
        """One turn's work after the sockets were read: callbacks, relay, deadlines, timers."""
        self.run_soon()
        self.workers.flush_touches()
        self.relay.flush()
        self.pool.expire()
        if timers:
            self.timers()
        self.run_soon()

    def run_soon(self) -> None:
        while self.soon:
            todo = list(self.soon)
            self.soon.clear()
            for fn in todo:
                try:
                    fn()
                except Exception:
                    log.error("router callback failed", exc_info=True)

    def next_wakeup(self) -> float:
        """When the loop must turn again at the latest (monotonic seconds)."""
        if self.soon:
            return self.clock()
        nxt = min(self.relay.next_timer(), self.clock() + 0.1)
        deadline = self.pool.next_deadline()
        return nxt if deadline is None else min(nxt, deadline)

    def timers(self) -> None:
        now = self.clock()
        self.pool.probe_due(self.health_timeout)
        if now >= self._next_forget:
            self._next_forget = now + FORGET_INTERVAL
            self.workers.forget(now)
        self.relay.tick(now)
        self.reshard.tick(now)

    def on_shard_down(self, link: ShardLink) -> None:
        self.relay.on_shard_down(link)

    def on_shard_up(self, link: ShardLink) -> None:
        """Nothing to do at once: the relay resynchronises the shard on its next tick."""

    def on_workers_gone(self, link: ShardLink, workers: list[str]) -> None:
        self.workers.gone(link.id, workers)

    # -- client requests ---------------------------------------------------------------------------
    def handle(self, frames: list[bytes], user: str | None = None) -> None:
        """One message from the front: ``[*route, routing_key, body]``; ``user`` is the principal of
        the sender's CURVE key (a secured router serves nobody without one)."""
        try:
            if self.reshard.holding and self.reshard.hold(frames, user):
                return  # about a task id being moved: answered after the switch
            self._on_request(frames, user)
        except Exception as e:
            log.error("router: request failed", exc_info=True)
            self._reply_error(
                frames[:1] if len(frames) < 3 else frames[:-2],
                wire.peek_req_id(frames[-1]),
                FederationError(f"router error: {type(e).__name__}: {e}"),
            )

    def _on_request(self, frames: list[bytes], user: str | None = None) -> None:
        if len(frames) < 3 or len(frames) > MAX_FRONT_FRAMES:
            log.warning(
                "router: dropped a message of %d frames (expected [routing_key, body])", len(frames) - 1
            )
            self._reply_error(
                frames[:1],
                wire.peek_req_id(frames[-1]) if len(frames) > 1 else -1,
                ProtocolError(
                    f"expected frames [routing_key, body], got {len(frames) - 1} frame(s)", code="bad_frames"
                ),
            )
            return
        route, key, body = frames[:-2], frames[-2], frames[-1]
        if len(body) > self.config.router.max_message_bytes:
            self._reply_error(
                route,
                wire.peek_req_id(body),
                ProtocolError("request exceeds the size limit", code="too_large"),
            )
            return
        head = wire.peek_header(body) if key else None
        authz = self.authz
        if head is not None and head[1] in UNDECODED:
            if authz is not None:
                # decided by the method alone (an unscoped principal), else decoded and checked below
                principal = authz.principals.get(user) if user else None
                if principal is None or authz.needs_body(principal, head[1]):
                    head = None
                else:
                    denied = authz.authorize(principal, head[1], None)
                    if denied is not None:
                        self._deny(route, head[0], principal.name, head[1], denied)
                        return
        if head is not None and head[1] in UNDECODED:
            # the hot path: a single-task call placed by its routing frame, body passed through
            self.metrics.request(head[1])
            fast = Call(route, head[0], head[1], None, body)
            sid = self._owner_of_key(key)
            if (self.workers.pinned or self.workers.cross_runners) and self.workers.is_runner(
                key.decode("utf-8", "replace")
            ):
                # a batch runner's report changes its batch's tasks, some on other shards
                self.relay.hold(fast, sid)
            self.forward(fast, sid, key, body)
            if head[1] in _PLACEHOLDER_WRITES:
                self._to_placeholders(key, sid, body)
            return
        try:
            req = wire.decode_request(body, self.config.router.max_message_bytes)
        except ProtocolError as e:
            self._reply_error(route, wire.peek_req_id(body), e)
            return
        scoped = None
        if authz is not None:
            who = authz.resolve(user, req.meta)
            if isinstance(who, FederationError):
                self._deny(route, req.req_id, user or "(no key)", req.method, who)
                return
            denied = authz.authorize(who, req.method, req.kwargs)
            if denied is not None:
                self._deny(route, req.req_id, who.name, req.method, denied)
                return
            if not who.unscoped and req.method in FILTERED_READS:
                scoped = who
        call = Call(route, req.req_id, req.method, req.kwargs, body)
        call.principal = scoped
        call.user = user
        self.metrics.request(req.method)
        spec = METHODS.get(req.method)
        if spec is None:
            self.fail(call, UnknownMethodError(f"unknown method {req.method!r}"))
            return
        self.handlers[spec.kind](call, spec)

    def _to_placeholders(self, key: bytes, sid: str, body: bytes) -> None:
        """A status message or progress of a task that dependents' shards mirror: luigid has one
        task, which may be only their placeholder yet.  The same call goes to every mirror (the
        placeholder's own, read while the owner does not have the task) and the owner keeps it
        for the task it may make later (``fed_placeholder_fields``)."""
        task_id = key.decode("utf-8", "replace")
        mirrors = [m for m in self.relay.mirrors_of(task_id) if m != sid]
        if not mirrors:
            return
        try:
            req = wire.decode_request(body, self.config.router.max_message_bytes)
        except ProtocolError:
            return
        field = "status_message" if req.method == "set_task_status_message" else "progress_percentage"
        if field not in req.kwargs:
            return

        def ignore(result: Any, err: FederationError | None) -> None:
            """Best effort, as the owner's answer decides the client's."""

        for mirror in sorted(mirrors):
            self.pool.call(mirror, req.method, req.kwargs, ignore)
        self.pool.call(
            sid, "fed_placeholder_fields", {"task_id": task_id, "fields": {field: req.kwargs[field]}}, ignore
        )

    def _deny(self, route: list[bytes], req_id: int, who: str, method: str, err: FederationError) -> None:
        """Refuse a call (nothing changes); logged once a minute per principal and method."""
        now = self.clock()
        if now - self._denials.get((who, method), -DENIAL_LOG_INTERVAL) >= DENIAL_LOG_INTERVAL:
            if len(self._denials) > 10_000:
                self._denials.clear()
            self._denials[(who, method)] = now
            log.warning("router: refused %s from %s: %s", method, who, err.message)
        self._reply_error(route, req_id, err)

    # -- placement -----------------------------------------------------------------------------------
    def route(self, task_id: str) -> str:
        """The shard serving ``task_id``: its owner, unless it is a batch runner pinned to its batch's shard."""
        pinned = self.workers.pinned
        if pinned:
            sid = pinned.get(task_id)
            if sid is not None:
                return sid
        return self.owner(task_id)

    def _owner_of_key(self, key: bytes) -> str:
        try:
            return self.route(key.decode("utf-8"))
        except UnicodeDecodeError:
            return self.route(key.decode("utf-8", "replace"))

    def _owner_or_any(self, task_id: Any) -> str:
        if isinstance(task_id, str):
            return self.route(task_id)
        return self._any_link_id()

    def _any_link_id(self) -> str:
        for link in self.links.values():
            if link.state is not LinkState.DOWN:
                return link.id
        return next(iter(self.links))

    # -- answering clients -----------------------------------------------------------------------------
    def _reply_error(self, route: list[bytes], req_id: int, err: FederationError) -> None:
        self.metrics.errors.labels(err.code).inc()
        self.send_front(route, wire.encode_error(req_id, err))

    def reply(self, call: Call, result: Any) -> None:
        if call.done:
            return
        call.done = True
        if call.principal is not None and self.authz is not None:
            result = filter_read(call.method, result, call.principal, self.authz.namespace_of)
        try:
            body = wire.encode_ok(call.req_id, result)
        except Exception as e:
            log.error("router: cannot encode the answer to %s", call.method, exc_info=True)
            body = wire.encode_error(call.req_id, FederationError(f"cannot encode reply: {e}"))
        self.send_front(call.route, body)

    def fail(self, call: Call, err: FederationError) -> None:
        if call.done:
            return
        call.done = True
        self.metrics.errors.labels(err.code).inc()
        self.send_front(call.route, wire.encode_error(call.req_id, err))

    def release(self, call: Call) -> None:
        """One thing the answer waited for is done; send the answer when nothing is left."""
        call.waits -= 1
        if call.waits <= 0 and call.body is not None and not call.done:
            call.done = True
            self.send_front(call.route, call.body)

    def _answer(self, call: Call) -> Callable[[Any, FederationError | None], None]:
        def cb(result: Any, err: FederationError | None) -> None:
            if err is not None:
                self.fail(call, err)
            else:
                self.reply(call, result)

        return cb

    # -- forwarding ------------------------------------------------------------------------------------
    def forward(self, call: Call, sid: str, key: bytes, body: bytes) -> None:
        """Send ``body`` to shard ``sid`` as is; its reply goes back undecoded once nothing holds it."""

        def done(reply_body: Any, err: FederationError | None) -> None:
            if err is not None:
                self.fail(call, err)
                return
            call.body = reply_body
            if call.waits <= 0 and not call.done:
                call.done = True
                self.send_front(call.route, reply_body)

        self.pool.send(sid, key, body, done, raw=True)

    def _on_forward(self, call: Call, route: Route) -> None:
        task_id = call.args.get("task_id")
        sid = self._owner_or_any(task_id)
        self.forward(call, sid, _key(task_id), call.request)
        if call.method in _PLACEHOLDER_WRITES and isinstance(task_id, str):
            self._to_placeholders(_key(task_id), sid, call.request)

    def _on_add_task(self, call: Call, route: Route) -> None:
        kwargs = call.args
        task_id = kwargs.get("task_id")
        if not isinstance(task_id, str):
            self.fail(call, BadArgumentsError("add_task: task_id must be a string"))
            return
        batch_id = kwargs.get("batch_id")
        if kwargs.get("status") == "RUNNING":
            self.workers.pin_runner(task_id, batch_id)
        sid = self.route(task_id)
        # a batch runner's report changes its batch's tasks (on other shards too)
        runner = self.workers.is_runner(task_id) or (
            isinstance(batch_id, str) and batch_id in self.workers.cross
        )
        if runner and kwargs.get("status") in ("DONE", "FAILED", "DISABLED"):
            self.workers.runner_finished(task_id)
        link = self.links[sid]
        worker = kwargs.get("worker")
        if isinstance(worker, str) and link.state is not LinkState.DOWN:
            self.workers.meet(worker, sid)
            self.workers.active_on(worker, sid)
        if self._names_remote_dep(kwargs, sid):
            # the worker becomes a stakeholder of each dependency (Luigi's add_task): the mirror's
            # owner hears of it from the shard's feed before the worker's next call (``Relay``),
            # answered once that is sent (a get_work meanwhile waits for it: ``router.summaries``)
            self.relay.hold(call, sid, until_answered=False)
        if kwargs.get("resources"):
            self.resources.on_add_task(sid)
        finished = kwargs.get("status") in ("DONE", "FAILED", "DISABLED")
        if runner or self.relay.is_mirrored(task_id) or (finished and self.resources.in_use(sid)):
            # a batch runner's report also changes its members, which other shards may mirror; a
            # finished task may free resources the other shards' next get_work must see free
            self.relay.hold(call, sid)
        self.forward(call, sid, task_id.encode("utf-8"), call.request)
        self.relay.reraise(task_id, sid, kwargs.get("priority", 0))
        self.relay.on_add_task(call, sid, kwargs)

    def _names_remote_dep(self, kwargs: dict[str, Any], sid: str) -> bool:
        """An ``add_task`` for shard ``sid`` naming a dependency another shard owns."""
        if kwargs.get("assistant"):
            return False  # an assistant is no stakeholder
        for field_name in ("deps", "new_deps"):
            deps = kwargs.get(field_name)
            if isinstance(deps, list) and any(isinstance(d, str) and self.owner(d) != sid for d in deps):
                return True
        return False

    def _on_forward_relay(self, call: Call, route: Route) -> None:
        task_id = call.args.get("task_id")
        sid = self._owner_or_any(task_id)
        if isinstance(task_id, str) and self.relay.is_mirrored(task_id):
            self.relay.hold(call, sid)
            if call.method in _STATUS_ACTIONS and self.relay.mirrors_of(task_id) - {sid}:
                self.pool.call(sid, call.method, call.args, self._or_placeholder(call, task_id, sid))
                return
        self.forward(call, sid, _key(task_id), call.request)

    def _or_placeholder(
        self, call: Call, task_id: str, sid: str
    ) -> Callable[[Any, FederationError | None], None]:
        """The owner's answer to ``forgive_failures``/``mark_as_done``; when the owner does not
        have the task (status None) but a dependent's shard has its placeholder, luigid has that
        placeholder, which neither action changes: status UNKNOWN."""

        def answer(result: Any) -> None:
            # as ``forward`` answers: once the relay no longer holds the call
            call.body = wire.encode_ok(call.req_id, result)
            if call.waits <= 0 and not call.done:
                call.done = True
                self.send_front(call.route, call.body)

        def done(result: Any, err: FederationError | None) -> None:
            if err is not None:
                self.fail(call, err)
                return
            mirrors = sorted(m for m in self.relay.mirrors_of(task_id) if m != sid)
            if not (isinstance(result, dict) and result.get("status") is None and mirrors):
                answer(result)
                return

            def named(found: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
                # a placeholder still there (not the mirror of a task its owner deleted)
                here = any(isinstance(r, dict) and task_id in r for _, r in found)
                answer({**result, "status": merge.UNKNOWN} if here else result)

            self.gather(mirrors, "fed_display_names", {"task_ids": [task_id]}, named)

        return done

    # -- workers ---------------------------------------------------------------------------------------
    def _on_worker_call(self, call: Call, route: Route) -> None:
        kwargs = call.args
        self.workers.remember(call.method, kwargs)
        worker = kwargs.get("worker")
        if call.method == "announce_scheduling_failure" and not isinstance(worker, str):
            worker = None
        targets = self.workers.targets(worker)
        assert route.merge is not None
        merge_fn = route.merge
        if not targets:
            self.reply(call, merge_fn([], kwargs, self.merge_context))
            return

        def done(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            if errors and not route.tolerant:
                self.fail(call, errors[0][1])
            else:
                self.reply(call, merge_fn(results, kwargs, self.merge_context))

        self.gather(targets, call.method, kwargs, done)

    def _on_one_worker_call(self, call: Call, route: Route) -> None:
        # set_worker_processes and send_scheduler_message queue one message for the worker (luigid
        # makes the worker if it is new): one shard its pings ask must queue it, once
        worker = call.args.get("worker")
        targets = [t for t in self.workers.targets(worker) if self.links[t].state is not LinkState.DOWN]
        sid = targets[0] if targets else self._any_link_id()
        if isinstance(worker, str):
            self.workers.meet(worker, sid)
        self.pool.call(sid, call.method, call.args, self._answer(call))

    # -- fan-out ---------------------------------------------------------------------------------------
    def gather(
        self,
        targets: Iterable[str],
        method: str,
        kwargs: dict[str, Any] | Callable[[str], dict[str, Any]],
        done: Gathered,
        *,
        timeout: float | None = None,
        force: bool = False,
        one_stamp: bool = False,
    ) -> None:
        """Call every target; ``done(results, errors)`` once all have answered or failed.

        ``one_stamp``: every target gets the same order stamp, so what each does is numbered
        as done at one moment, as one luigid's walk over all their tasks (a client's call to
        every shard: the tasks one prune fails on several shards are listed in creation
        order, ``SchedulerCore.order_keys``)."""
        ids = list(dict.fromkeys(targets))
        results: dict[str, Any] = {}
        errors: dict[str, FederationError] = {}
        if not ids:
            self.soon.append(lambda: done([], []))
            return

        def one(sid: str) -> Callable[[Any, FederationError | None], None]:
            def cb(result: Any, err: FederationError | None) -> None:
                if err is not None:
                    errors[sid] = err
                else:
                    results[sid] = result
                if len(results) + len(errors) == len(ids):
                    done(
                        [(s, results[s]) for s in ids if s in results],
                        [(s, errors[s]) for s in ids if s in errors],
                    )

            return cb

        stamp = self.pool.next_stamp() if one_stamp and len(ids) > 1 else None
        for sid in ids:
            kw = kwargs(sid) if callable(kwargs) else kwargs
            self.pool.call(sid, method, kw, one(sid), timeout=timeout, force=force, stamp=stamp)

    def _on_all_call(
        self,
        call: Call,
        route: Route,
        then: Callable[[list[tuple[str, Any]], Callable[[Any], None]], None] | None = None,
        *,
        shard_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Ask every shard (a read: every shard up) and answer their merged answers; ``then``,
        given, takes the answers and the function that answers the call instead (more asks).
        ``shard_kwargs``: what the shards are asked with, if not the call's own arguments."""
        kwargs = call.args
        targets = self._up_links() if route.read else list(self.links)
        if not targets:
            self.fail(call, TransportError("no shard is available"))
            return
        assert route.merge is not None
        merge_fn = route.merge

        def answer(compute: Any) -> None:
            try:
                self.reply(call, compute())
            except (TypeError, ValueError, AttributeError) as e:
                self.fail(call, ProtocolError(f"{call.method}: shards answered in an unexpected shape: {e}"))

        def done(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            bad = [e for _, e in errors if not isinstance(e, TransportError)]
            if bad or (errors and not route.read) or not results:
                self.fail(call, (bad or [e for _, e in errors])[0])
                return
            if then is not None:
                then(results, answer)
                return
            answer(lambda: merge_fn(results, kwargs, self.merge_context))

        asked = kwargs if shard_kwargs is None else shard_kwargs
        self.gather(targets, route.shard_method or call.method, asked, done, one_stamp=True)

    def _up_links(self) -> list[str]:
        return [lid for lid, link in self.links.items() if link.state is not LinkState.DOWN]

    def _on_task_list(self, call: Call, route: Route) -> None:
        """``task_list``: luigid compares the number of tasks of the status with
        ``max_shown_tasks`` before it prunes, and answers the count without pruning when over.
        No shard can know that on its own: with a limit and no search every shard counts first
        (``fed_task_list(count_only=True)``, nothing changes there); over the limit that count is
        the answer, else every shard lists (and prunes) as an ``ALL`` read.

        With ``upstream_status``, luigid walks each PENDING task's dependencies, which may live
        on any shard: every shard lists unfiltered and sends the statuses and deps of its tasks
        (``upstream=True``), and the router walks them as luigid (``merge.merge_task_list``)."""
        kwargs = call.args
        listing = kwargs
        if kwargs.get("upstream_status"):
            listing = {**kwargs, "upstream_status": "", "upstream": True}
        if kwargs.get("search") or not kwargs.get("limit", True):
            self._on_all_call(call, route, shard_kwargs=listing)
            return
        targets = self._up_links()
        if not targets:
            self.fail(call, TransportError("no shard is available"))
            return

        def counted(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            bad = [e for _, e in errors if not isinstance(e, TransportError)]
            if bad:
                self.fail(call, bad[0])
                return
            try:
                over = merge.task_count_over_limit(results, kwargs, self.merge_context)
            except (TypeError, ValueError) as e:
                self.fail(call, ProtocolError(f"task_list: shards counted in an unexpected shape: {e}"))
                return
            if over is not None:
                self.reply(call, over)
            else:
                self._on_all_call(call, route, shard_kwargs=listing)

        self.gather(targets, "fed_task_list", {**kwargs, "count_only": True}, counted, one_stamp=True)

    def _on_worker_list(self, call: Call, route: Route) -> None:
        """``worker_list``: every shard's workers; a worker's first task that no shard answered as
        its own may be a task of a shard that does not know the worker (owned, or a dependent's
        placeholder there): every shard is asked for its display name (``fed_display_names``)."""
        kwargs = call.args

        def then(results: list[tuple[str, Any]], answer: Callable[[Any], None]) -> None:
            ask = merge.unnamed_first_tasks(results)
            if not ask:
                answer(lambda: merge.worker_list_reply(results, kwargs, self.merge_context))
                return

            def named(more: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
                # a shard down: the names of the shards that answered (luigid's reads go on too)
                answer(lambda: merge.worker_list_reply(results, kwargs, self.merge_context, more))

            self.gather(self._up_links(), "fed_display_names", {"task_ids": ask}, named)

        self._on_all_call(call, route, then)

    def _on_any_call(self, call: Call, route: Route) -> None:
        self.pool.call(self._any_link_id(), call.method, call.args, self._answer(call))

    # -- get_work and graphs ---------------------------------------------------------------------------
    def _on_get_work(self, call: Call, route: Route) -> None:
        worker = call.args.get("worker")
        if not isinstance(worker, str):
            self.fail(call, BadArgumentsError("get_work: worker is required"))
            return
        assistant = bool(call.args.get("assistant"))
        targets = self.workers.targets(worker, all_shards=assistant)
        if assistant:
            # an assistant may run any shard's task: every shard meets it (its add_worker info and
            # batchers first), and its pings keep it alive on all of them
            for sid in targets:
                if self.links[sid].state is not LinkState.DOWN:
                    self.workers.meet(worker, sid)
        GetWork(self, call, self.workers.rotation(worker, targets)).start()

    def _on_graph(self, call: Call, route: Route) -> None:
        kwargs = dict(call.args)
        root = kwargs.get("task_id")
        if not isinstance(root, str):
            self.forward(call, self._any_link_id(), b"", call.request)
            return
        Graph(self, call, root, kwargs, inverse=route.kind == INVERSE_DEP_GRAPH).start()

    def _on_placeholder_read(self, call: Call, route: Route) -> None:
        """``fetch_error`` or ``get_task_status_message`` of a task: its owner's answer, or, when the
        owner never had the task but a dependent's shard made it a placeholder, that placeholder's
        (luigid has that one record)."""
        task_id = call.args.get("task_id")
        sid = self._owner_or_any(task_id)

        def from_mirror() -> bool:
            if isinstance(task_id, str):
                for mirror in sorted(self.relay.mirrors_of(task_id)):
                    if mirror != sid and self.links[mirror].state is not LinkState.DOWN:
                        self.pool.call(mirror, call.method, call.args, self._answer(call))
                        return True
            return False

        def done(result: Any, err: FederationError | None) -> None:
            if err is not None:
                self.fail(call, err)
                return
            if _unknown_task(result) and from_mirror():
                return
            if (
                (
                    (
                        call.method == "get_task_status_message"
                        and result == {"taskId": task_id, "statusMessage": ""}
                    )
                    or (
                        call.method == "get_task_progress_percentage"
                        and result == {"taskId": task_id, "progressPercentage": None}
                    )
                )
                and isinstance(task_id, str)
                and self.relay.mirrors_of(task_id) - {sid}
            ):
                # Luigi's answer for a task it does not have, or a message set to "" (a progress
                # never set): the owner's fetch_error tells which
                def known(probe: Any, err: FederationError | None) -> None:
                    if err is not None or not _unknown_task(probe) or not from_mirror():
                        self.reply(call, result)

                self.pool.call(sid, "fetch_error", {"task_id": task_id}, known)
                return
            self.reply(call, result)

        self.pool.call(sid, call.method, call.args, done)

    def _on_owner(self, call: Call, route: Route) -> None:
        """``owner(task_id)`` -> ``{"task_id", "shard_id", "group"}``: where placement puts the task."""
        task_id = call.args.get("task_id")
        if not isinstance(task_id, str):
            self.fail(call, BadArgumentsError("owner: task_id must be a string"))
            return
        sid = self.route(task_id)
        self.reply(call, {"task_id": task_id, "shard_id": sid, "group": self.links[sid].group})

    # -- federation_health -----------------------------------------------------------------------------
    def _on_health(self, call: Call, route: Route) -> None:
        ids = list(self.links)
        infos: dict[str, Any] = {}
        feds: dict[str, Any] = {}
        errs: dict[str, str] = {}
        fed_errs: dict[str, str] = {}
        remaining = [2 * len(ids)]

        def finish() -> None:
            shards = []
            for sid in ids:
                link = self.links[sid]
                info = infos.get(sid) or {}
                fed = feds.get(sid) or {}
                up = sid in infos
                if up and sid in fed_errs:
                    errs[sid] = fed_errs[sid]
                elif (
                    up
                    and fed
                    and fed.get("placement")
                    not in (
                        self.placement.fingerprint,
                        self.relay.next_fingerprint,  # a resharding's shards serve its target already
                    )
                ):
                    errs[sid] = (
                        f"placement differs from the router's ({fed.get('placement')} != "
                        f"{self.placement.fingerprint}): serve it with the same federation.toml"
                    )
                shards.append(
                    {
                        "shard_id": sid,
                        "group": link.group,
                        # with standbys: the endpoint that serves it (a standby's after a failover)
                        "endpoint": (link.spec.standbys and info.get("endpoint")) or link.spec.endpoint,
                        "up": up,
                        "latency_ms": link.latency_ms if up else None,
                        "error": None if up and sid not in errs else (errs.get(sid) or link.error or "down"),
                        "counts": dict(fed.get("counts") or {}),
                        "namespaces": dict(fed.get("namespaces") or {}),
                        "workers": int(fed.get("workers") or 0),
                        # a shard that does not answer: what its config says (never a password)
                        "backend": info.get("backend") or link.spec.backend,
                        "location": info.get("location") or link.spec.location,
                        "version": info.get("version"),
                        "started": info.get("started"),
                    }
                )
            self.reply(
                call,
                {
                    "router": {
                        "zmq": self.endpoint,
                        "http": self.http_endpoint,
                        "version": __version__,
                        "time": time.time(),
                    },
                    "default_group": self.config.default_group,
                    "groups": {g: list(m) for g, m in self.config.groups.items()},
                    "shards": shards,
                },
            )

        def step() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                finish()

        for sid in ids:

            def on_info(r: Any, e: FederationError | None, sid: str = sid) -> None:
                if e is None and isinstance(r, dict):
                    infos[sid] = r
                elif e is not None:
                    errs[sid] = e.message or e.code
                step()

            def on_fed(r: Any, e: FederationError | None, sid: str = sid) -> None:
                if e is None and isinstance(r, dict):
                    feds[sid] = r
                elif e is not None:
                    fed_errs[sid] = (
                        f"not a federated shard: {e.message}"
                        if e.code == "unknown_method"
                        else e.message or e.code
                    )
                step()

            self.pool.call(
                sid, "shard_info", {}, on_info, timeout=self.health_timeout, force=True, probe=True
            )
            self.pool.call(sid, "fed_health", {}, on_fed, timeout=self.health_timeout, force=True)


def authorizer(config: FederationConfig) -> Authorizer | None:
    """The router's :class:`~federation.auth.Authorizer` of ``[security]``, or None when unsecured."""
    security = config.security
    if security is None:
        return None
    from federation.auth import GATEWAY, GATEWAY_PRINCIPAL, Principal
    from federation.placement import namespace_of

    principals = [Principal(p.name, p.role, p.namespaces) for p in security.principals]
    principals.append(Principal(GATEWAY_PRINCIPAL, GATEWAY, ()))
    tokens = {p.token_sha256: p.name for p in security.principals if p.token_sha256}
    return Authorizer(principals, namespace_of, tokens)


#: single-task writes a placeholder takes too (``RouterCore._to_placeholders``)
_PLACEHOLDER_WRITES = frozenset({"set_task_status_message", "set_task_progress_percentage"})
#: UI actions on one task whose answer is the task's status (None: the scheduler has no such task)
_STATUS_ACTIONS = frozenset({"forgive_failures", "mark_as_done"})


def _unknown_task(result: Any) -> bool:
    """``fetch_error``'s answer for a task the shard does not have."""
    return isinstance(result, dict) and set(result) == {"taskId", "error"}


def _key(task_id: Any) -> bytes:
    return task_id.encode("utf-8") if isinstance(task_id, str) else b""


class FakeClock:
    """Monotonic seconds that move only when told to (``advance``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InProcRouter:
    """A router and its shards in this process: :class:`RouterCore` on an :class:`InProcShardPool`.

    ``call(method, **kwargs)`` sends a request as a client would and runs the federation until
    nothing is in flight (:meth:`settle`); faults come from the pool (``kill``/``restart``) and
    time from the :class:`FakeClock`.  Tests build the shards (``ShardServer`` with ``bind=None``)
    and hand them in: the router package never imports the shard package.
    """

    def __init__(
        self, config: FederationConfig, shards: dict[str, ShardHandler], *, clock: FakeClock | None = None
    ):
        self.clock = clock or FakeClock()
        self._answers: dict[bytes, bytes] = {}
        self._ids = 0

        def make_pool(specs: Any, **kwargs: Any) -> InProcShardPool:
            return InProcShardPool(shards, specs, **kwargs)

        self.core = RouterCore(config, self._on_answer, make_pool, clock=self.clock)
        pool = self.core.pool
        assert isinstance(pool, InProcShardPool)
        self.pool: InProcShardPool = pool

    def _on_answer(self, route: list[bytes], body: bytes) -> None:
        self._answers[route[0]] = body

    def settle(self, max_rounds: int = 10_000) -> int:
        """Run router turns and shard batches until no call is in flight and nothing is queued.

        Calls to a killed shard stay in flight until the clock passes their deadline: advance the
        clock (``clock.advance``) and settle again.  Returns the number of rounds run.
        """
        for rounds in range(1, max_rounds + 1):
            self.core.step()
            moved = self.pool.pump()
            self.core.step()
            if not moved and not self.core.soon and not self.pool.queued():
                return rounds
        raise RuntimeError(f"the in-process federation did not settle in {max_rounds} rounds")

    def send(self, method: str, **kwargs: Any) -> bytes:
        """Send a request without waiting; the answer is :meth:`answer` of the returned route."""
        self._ids += 1
        route = b"client-%d" % self._ids
        body = wire.encode_request(self._ids, method, kwargs)
        self.core.handle([route, wire.routing_key(kwargs), body])
        return route

    def answer(self, route: bytes) -> Any:
        """The answer to a sent request (raises its error), or ``LookupError`` if none yet."""
        body = self._answers.pop(route, None)
        if body is None:
            raise LookupError("no answer yet")
        reply = wire.decode_reply(body)
        if reply.ok:
            return reply.result
        raise error_from_wire(reply.error)

    def call(self, method: str, **kwargs: Any) -> Any:
        route = self.send(method, **kwargs)
        self.settle()
        return self.answer(route)
