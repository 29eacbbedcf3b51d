"""``get_work`` across the shards that hold work for a worker."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

from federation.errors import FederationError, ProtocolError, TransportError
from federation.summary import SUMMARY_BATCH, SUMMARY_BATCH_RUNNING, SUMMARY_NONTRIVIAL
from router import merge, summaries
from router.calls import Call
from router.links import LinkState

if TYPE_CHECKING:
    from router.core import RouterCore


class GetWork:
    """One ``get_work`` over the shards that hold work for the worker, answered as one luigid would.

    1. **Offers.**  With more than one such shard, each is asked in parallel what it would hand
       out (``fed_offer``: Luigi's selection on that shard, its worker bookkeeping included,
       nothing handed out) and that task's rank: a re-send of the worker's RUNNING task first
       (Luigi's ``current_tasks`` rule), then Luigi's ``(priority, -time)``.
    2. **Grant.**  The best offer's shard is asked to hand out (``fed_get_work``); it selects
       again, so a task taken meanwhile by another worker is never handed out twice.  If it
       hands out nothing after all, the next offers are tried in rank order.

    Never two tasks for one call: a shard is asked to hand out only after the previous one
    answered without a task.  The counters are summed over the shards (each shard's latest
    answer), which is what one luigid counts (Luigi's worker reads them only when no task came).
    With one shard, or a worker known to one shard only, step 1 is skipped.
    """

    def __init__(self, core: RouterCore, call: Call, targets: list[str]) -> None:
        self.core = core
        self.call = call
        for key in _FED_KEYS:  # the router's to set, never a client's
            call.args.pop(key, None)
        self.targets = list(targets)
        self.queue: list[str] = []
        #: each shard's latest answer (offer or grant), for the counters
        self.answers: dict[str, dict[str, Any]] = {}
        self.unavailable: FederationError | None = None
        self.token = False
        #: each shard's offer, and whether it sees the worker as Luigi's trivial worker
        self.offers: dict[str, dict[str, Any]] = {}
        self.trivial: dict[str, bool] = {}
        #: Luigi's greedy walk over several shards (resources in play): each shard's RUNNING tasks
        #: holding resources and its reservations, as greedy events (``external_for``)
        self.greedy_mode = False
        self.walked_again = False
        self.running: dict[str, list[Any]] = {}
        self.reserved: dict[str, list[Any]] = {}
        #: a direct grant (``_grant_directly``): each shard's guard (the next shard's best rank)
        self.direct = False
        self.guards: dict[str, list[Any]] = {}
        self.live: list[str] = []
        #: the status-entry numbers of each answer's running_tasks (one luigid's order over shards)
        self.seqs: dict[str, Any] = {}

    def start(self) -> None:
        core = self.core
        if core.config.scheduler.prune_on_get_work:
            # Luigi's prune_on_get_work prunes the whole scheduler first: the shards this get_work
            # does not reach prune too (their workers and tasks), before it goes on
            others = [
                sid
                for sid, link in core.pool.links.items()
                if sid not in self.targets and link.state is not LinkState.DOWN
            ]
            if others:
                core.gather(others, "prune", {}, lambda results, errors: self._start())
                return
        self._start()

    def _start(self) -> None:
        pool = self.core.pool
        if self.call.args.get("current_tasks") is not None:
            # Luigi resets the worker's batches whose runner it never reported; for a batch over
            # several shards the router knows that: each shard hears it before the offers
            orphaned = self.core.workers.orphaned(self.call.args.get("worker"))
            if orphaned:
                # PENDING again in batch order over all shards, numbered from one stamp
                first = pool.next_stamp()
                effects = [["reset", batch_id, first] for batch_id in orphaned]
                for sid, link in pool.links.items():
                    if link.state is LinkState.READY and link.federated is True:
                        pool.call(sid, "fed_batch_apply", {"effects": effects}, _ignore)
        live = []
        for sid in self.targets:
            link = pool.links[sid]
            if link.state is LinkState.DOWN:
                self.unavailable = pool.down_error(link)
            else:
                live.append(sid)
        # Luigi's greedy walk counts every RUNNING task's resources, and reserves them for other
        # workers' higher-ranked tasks, in their rank places over all tasks: the shards asked send
        # theirs with their offers (``greedy``); the others with tasks needing resources walk for
        # them alone (``fed_greedy_walk``: nothing changes there)
        holders = [
            sid
            for sid, link in pool.links.items()
            if sid not in live
            and link.state is LinkState.READY
            and link.federated is True
            and (self.core.resources.shards[sid].usage or self.core.resources.shards[sid].pending)
        ]
        worker = self.call.args.get("worker")
        if isinstance(worker, str):
            self.core.workers.got_work(worker)
        if (len(live) <= 1 and not holders) or any(pool.links[sid].federated is not True for sid in live):
            if len(live) == 1 and isinstance(worker, str):
                self.core.workers.active_on(worker, live[0])
            self.queue = live
            self.next()
            return
        plan = self._direct_plan(live) if not holders and self.unavailable is None else None
        if plan is not None:
            # first the router's own calls in flight there that may give this worker better work
            # and were acknowledged to a client already (a batch's release...): router.summaries
            if summaries.after_settled([pool.links[sid] for sid in live], lambda: self._settled(live)):
                self.core.metrics.get_work_path("waited")
                return
            if self._grant_directly(live, plan):
                return
        self._offer(live, holders)

    def _settled(self, live: list[str]) -> None:
        if not self._grant_directly(live):
            self._offer(live, [])

    def _direct_plan(self, live: list[str]) -> list[tuple[str, list[Any]]] | None:
        """Each shard's summary of the worker, if together they decide its ``get_work``: every one
        in step and a plain choice (a trivial worker, no batch, no re-send, not disabled, no
        resources in play); None otherwise (the offers decide)."""
        core = self.core
        pool = core.pool
        worker = self.call.args.get("worker")
        if not isinstance(worker, str) or self.call.args.get("assistant"):
            return None
        if any(r.usage or r.pending for r in core.resources.shards.values()):
            return None  # resources in play: Luigi's greedy walk over all shards (the offers)
        current = self.call.args.get("current_tasks")
        listed = set(current) if isinstance(current, list) else None
        plan = []
        for sid in live:
            link = pool.links.get(sid)
            if link is None or link.state is LinkState.DOWN or not summaries.usable(link) or link.sum_prunes:
                return None
            summary = link.sums.get(worker)
            if summary is None:
                return None
            counts, _top, flags, running, _seqs = summary
            if flags & _NOT_PLAIN or counts.get("worker_state") == merge.DISABLED_STATE:
                return None
            if listed is not None and (
                flags & SUMMARY_BATCH_RUNNING or any(tid not in listed for tid in running)
            ):
                return None  # Luigi's re-send of a RUNNING task, or an orphaned batch's reset
            plan.append((sid, summary))
        return plan

    def _grant_directly(self, live: list[str], plan: list[tuple[str, list[Any]]] | None = None) -> bool:
        """Grant from the shards' summaries (``router.summaries``), without offers, when they
        decide it (``_direct_plan``).  The shard with the best task is asked to hand it out if
        it still ranks at least the next shard's best (``fed_get_work(guard=...)``); one that has
        nothing after all passes to the next; one whose choice is not plain any more declines,
        and the offers decide.  False: not decided here (the offers run)."""
        core = self.core
        worker = self.call.args.get("worker")
        if plan is None:  # (given: just made, nothing happened since)
            plan = self._direct_plan(live)
        if plan is None or not isinstance(worker, str):
            return False
        ranked: list[tuple[tuple[Any, ...], int, str]] = []
        for order, (sid, (counts, top, _flags, _running, seqs)) in enumerate(plan):
            self.answers[sid] = counts
            self.seqs[sid] = seqs
            if top is not None:
                ranked.append((tuple(top), -order, sid))
        ranked.sort(reverse=True)
        if ranked:
            self.queue = [sid for _, _, sid in ranked]
            # each shard hands out only what still ranks at least the next one's best
            self.guards = {
                sid: list(ranked[i + 1][0]) if i + 1 < len(ranked) else []
                for i, (_, _, sid) in enumerate(ranked)
            }
        else:
            # nothing anywhere: one shard hears the get_work (and hands out what came meanwhile)
            self.queue = [live[0]]
            self.guards = {live[0]: []}
        core.workers.active_on(worker, self.queue[0], get_work=True)
        core.metrics.get_work_path("direct")
        self.direct = True
        self.live = live
        self.next()
        return True

    def _offer(self, live: list[str], holders: list[str]) -> None:
        """Offers from every shard in ``live`` (and greedy walks where resources are in play)."""
        core = self.core
        pool = core.pool
        core.metrics.get_work_path("offers")
        versions = {sid: core.resources.version(sid) for sid in live}

        walk = {"worker": self.call.args.get("worker"), "assistant": bool(self.call.args.get("assistant"))}
        self.greedy_mode = bool(holders) or any(core.resources.shards[sid].usage for sid in pool.links)
        # resources in play: every shard's RUNNING tasks count (the slots of their workers, the
        # resources they hold)
        running_at = (
            [
                sid
                for sid, link in pool.links.items()
                if link.state is LinkState.READY and link.federated is True
            ]
            if self.greedy_mode
            else []
        )

        def kwargs(sid: str) -> dict[str, Any]:
            out = {**self.call.args, "external_used_resources": core.resources.external_usage(sid)}
            if self.greedy_mode:
                out["external_greedy"] = self.external_for(sid)
            return out

        def walked(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            for sid, events in results:
                self.reserved[sid] = _events(events, RESERVED)
            core.gather(live, "fed_offer", kwargs, offered)

        def ran(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            for sid, events in results:
                self.running[sid] = _events(events, RUNNING)
            if holders:
                core.gather(
                    holders,
                    "fed_greedy_walk",
                    lambda sid: {**walk, "external_greedy": self.external_for(sid)},
                    walked,
                )
            else:
                core.gather(live, "fed_offer", kwargs, offered)

        def offered(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            for _, err in errors:
                if not isinstance(err, TransportError):
                    core.fail(self.call, err)
                    return
                self.unavailable = err
            ranked: list[tuple[tuple[bool, Any, Any, Any], int, str]] = []
            for order, (sid, result) in enumerate(results):
                if not isinstance(result, dict) or not isinstance(result.get("reply"), dict):
                    core.fail(
                        self.call, ProtocolError(f"shard {sid} answered fed_offer in an unexpected shape")
                    )
                    return
                core.resources.note(sid, result, versions[sid])
                self.answers[sid] = result["reply"]
                self.seqs[sid] = result.get("running_seq")
                if result["reply"].get("worker_state") == merge.DISABLED_STATE:
                    # disabled on one shard is disabled: Luigi's answer to a disabled worker
                    core.reply(self.call, result["reply"])
                    return
                offer = result.get("offer")
                self.trivial[sid] = result.get("trivial") is not False
                if isinstance(offer, dict):
                    self.offers[sid] = offer
                    rank = offer.get("rank") or [0, 0]
                    # highest first; among equal priority and time the task that entered its
                    # status first (the stamped number, negated), as in luigid's stable sort;
                    # then the rotation's order (``order``)
                    tie = rank[2] if len(rank) > 2 else 0
                    resend = bool(offer.get("resend"))
                    if resend:
                        # Luigi re-sends the *last* RUNNING task in rank order: among equal
                        # priority and time, the one that entered RUNNING last
                        tie = -tie
                    ranked.append(((resend, rank[0], rank[1], tie), -order, sid))
            if not self.walked_again:
                reserved = {sid: _events(r.get("greedy"), RESERVED) for sid, r in results}
                holding = any(e[4] for _, r in results for e in _events(r.get("greedy")))
                # (slots alone change nothing where no task needs resources: an assistant's walk
                # reports every RUNNING task, a second round would be for nothing)
                if any(reserved.values()) or (not self.greedy_mode and holding):
                    # Luigi's greedy walk reserves resources for higher-ranked tasks of any shard:
                    # every shard walks again with the others' RUNNING tasks and reservations in
                    # their rank places (SchedulerCore.external_greedy)
                    self.walked_again = True
                    for sid, r in results:
                        self.running.setdefault(sid, _events(r.get("greedy"), RUNNING))
                    self.reserved.update({sid: evs for sid, evs in reserved.items() if evs})
                    self.greedy_mode = True
                    self.offers.clear()
                    core.gather(live, "fed_offer", kwargs, offered)
                    return
            ranked.sort(reverse=True)
            self.queue = [sid for _, _, sid in ranked]
            if self.queue and isinstance(self.offers[self.queue[0]].get("batcher"), dict):
                self.batch_across(self.queue[0])
                return
            self.next()

        if running_at:
            core.gather(running_at, "fed_greedy_walk", {**walk, "running_only": True}, ran)
        elif holders:
            ran([], [])
        else:
            core.gather(live, "fed_offer", kwargs, offered)

    def external_for(self, sid: str) -> list[list[Any]]:
        """The other shards' greedy events shard ``sid``'s walk counts: their RUNNING tasks holding
        resources and their reservations (``SchedulerCore.external_greedy``)."""
        out = [e for other, events in self.running.items() if other != sid for e in events]
        out += [e for other, events in self.reserved.items() if other != sid for e in events]
        return out

    # -- a batch whose tasks sit on several shards ------------------------------------------------
    def batch_across(self, home: str) -> None:
        """The best task is batchable for this worker: add the other shards' tasks Luigi would add.

        Luigi puts in a batch, after the best task, every ready task of its family ranked below
        it with the same unbatched parameters and resources (the worker's own tasks only, for a
        worker without PENDING tasks needing resources), up to the batcher's ``max_batch_size``.
        Every other shard is asked for its such tasks (``fed_batch_candidates``); with the best
        shard's own they are merged in rank order.  When all come from the best shard, it hands
        the batch out as usual; otherwise each shard hands out its part (``fed_batch_claim``, all
        or nothing per shard) and the router answers with the whole batch.  The best shard keeps
        the batch's runner (``WorkerRegistry.pin_runner``) and passes what the runner does on to
        the other shards' tasks (``fed_changes()["batch"]`` -> ``fed_batch_apply``).  A claim
        refused (a task taken meanwhile) gives back the others' claims and falls back to the
        best shard's own batch.
        """
        core = self.core
        pool = core.pool
        b = self.offers[home]["batcher"]
        names = b["names"]
        unbatched = {k: v for k, v in b["params"].items() if k not in names}
        max_size = b["max_batch_size"]
        limit = (
            100_000 if not isinstance(max_size, (int, float)) or math.isinf(max_size) else int(max_size) - 1
        )
        others = [
            sid
            for sid, link in pool.links.items()
            if sid != home and link.state is LinkState.READY and link.federated is True
        ]
        if limit <= 0 or not others:
            self.next()
            return
        best = b["members"][0]
        worker = self.call.args.get("worker")
        trivial = all(self.trivial.values())
        kwargs = {
            "family": b["family"],
            "unbatched": unbatched,
            "resources": b["resources"],
            "after": best[1],
            "worker": worker if trivial else None,
            "limit": limit,
        }

        def found(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            cands: list[tuple[list[Any], int, str, list[Any]]] = []
            for i, m in enumerate(b["members"][1:]):
                cands.append((m[1], -i, home, m))
            for sid, rows in results:
                if isinstance(rows, list):
                    for i, row in enumerate(rows):
                        cands.append((row[1], -i, sid, row))
            cands.sort(key=lambda c: (c[0], c[1]), reverse=True)
            chosen = cands[:limit]
            if all(sid == home for _, _, sid, _ in chosen):
                self.next()  # the best shard's own batch: it hands it out itself
                return
            self._claim(home, b, [(home, best)] + [(sid, row) for _, _, sid, row in chosen])

        core.gather(others, "fed_batch_candidates", kwargs, found)

    def _claim(self, home: str, b: dict[str, Any], members: list[tuple[str, list[Any]]]) -> None:
        core = self.core
        ids = [row[0] for _, row in members]
        batch_id = hashlib.md5("|".join(ids).encode("utf-8"), usedforsecurity=False).hexdigest()
        by_shard: dict[str, list[str]] = {}
        for sid, row in members:
            by_shard.setdefault(sid, []).append(row[0])
        worker = self.call.args.get("worker")
        host = self.call.args.get("host")
        position = {row[0]: i for i, (_, row) in enumerate(members)}
        # the batch's tasks enter BATCH_RUNNING in batch order over all shards, as in one luigid
        first = core.pool.next_stamp()

        def kwargs(sid: str) -> dict[str, Any]:
            return {
                "worker": worker,
                "host": host,
                "batch_id": batch_id,
                "task_ids": by_shard[sid],
                # every shard leaves the batch's orphan reset to the router (its runner may be
                # anywhere): WorkerRegistry.orphaned
                "remote": True,
                "first": first,
                "positions": [position[t] for t in by_shard[sid]],
            }

        def claimed(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            ok = [sid for sid, r in results if isinstance(r, dict) and r.get("claimed") is True]
            if len(ok) < len(by_shard):
                for sid in ok:
                    core.pool.call(sid, "fed_batch_release", {"batch_id": batch_id}, _ignore)
                self.next()  # fall back to the best shard's own batch
                return
            core.workers.cross_handed_out(batch_id, home, worker, {row[0]: sid for sid, row in members})
            names = b["names"]
            batched = {n: [row[2].get(n) for _, row in members] for n in names}
            reply = dict(self.answers.get(home) or {})
            reply["task_id"] = None
            reply["task_family"] = b["family"]
            reply["task_module"] = b["module"]
            reply["task_params"] = {**b["params"], **batched}
            reply["batch_id"] = batch_id
            reply["batch_task_ids"] = ids
            self.finish(reply)

        core.gather(list(by_shard), "fed_batch_claim", kwargs, claimed)

    def next(self) -> None:
        core = self.core
        pool = core.pool
        while self.queue:
            sid = self.queue[0]
            link = pool.links[sid]
            if link.state is LinkState.DOWN:
                self.queue.pop(0)
                self.unavailable = pool.down_error(link)
                continue
            if core.resources.pending(sid) and not self.token:
                if not core.resources.take(self.next):
                    return  # resumed by the token's next release
                self.token = True
            self.queue.pop(0)
            version = core.resources.version(sid)
            if link.federated is False:
                pool.call(
                    sid,
                    "get_work",
                    self.call.args,
                    lambda res, err, sid=sid, v=version: self.on_reply(  # type: ignore[misc]
                        sid, v, {"reply": res} if err is None else None, err
                    ),
                )
                return
            kwargs = {**self.call.args, "external_used_resources": core.resources.external_usage(sid)}
            if self.greedy_mode:
                kwargs["external_greedy"] = self.external_for(sid)
            if self.direct:
                kwargs["guard"] = self.guards.get(sid, [])
            pool.call(
                sid,
                "fed_get_work",
                kwargs,
                lambda res, err, sid=sid, v=version: self.on_reply(sid, v, res, err),  # type: ignore[misc]
            )
            return
        self.finish(None)

    def _drop_token(self) -> None:
        if self.token:
            self.token = False
            self.core.resources.give()

    def on_reply(self, sid: str, version: int, result: Any, err: FederationError | None) -> None:
        core = self.core
        self._drop_token()
        if err is not None:
            if isinstance(err, TransportError):
                self.unavailable = err
                self.next()
            else:
                core.fail(self.call, err)
            return
        if not isinstance(result, dict) or not isinstance(result.get("reply"), dict):
            core.fail(self.call, ProtocolError(f"shard {sid} answered fed_get_work in an unexpected shape"))
            return
        core.resources.note(sid, result, version)
        reply = result["reply"]
        if self.direct and result.get("declined") is True:
            # the shard's choice is not a plain one any more (or ranks below the next shard's):
            # the offers decide, as without summaries
            self.direct = False
            self.queue = []
            self.answers.clear()
            core.metrics.get_work_path("declined")
            self._offer(self.live, [])
            return
        self.answers[sid] = reply
        self.seqs[sid] = result.get("running_seq")
        batch_id = reply.get("batch_id")
        if isinstance(batch_id, str):
            core.workers.batch_handed_out(batch_id, sid, self.call.args.get("worker"))
        if reply.get("task_id") is not None or batch_id is not None:
            mirror = result.get("mirror")
            if isinstance(mirror, list) and len(mirror) == 4 and isinstance(mirror[0], str):
                # the task is RUNNING now: its mirrors on its dependents' shards say so before any
                # client's next call, as in luigid (a dependent is UPSTREAM_RUNNING at once); sent
                # at the end of this turn with the turn's other grants (Relay.push), ahead of
                # anything sent there later (same queue per shard), no round trip waited for
                for other in sorted(core.relay.mirrors_of(mirror[0])):
                    if other != sid and core.pool.links[other].state is not LinkState.DOWN:
                        core.relay.push(other, mirror)
            self.finish(reply)
        else:
            self.next()

    def finish(self, chosen: dict[str, Any] | None) -> None:
        core = self.core
        self._drop_token()
        if chosen is None and self.unavailable is not None:
            # a shard with this worker's tasks is down: "no work" would make the worker quit
            core.fail(self.call, self.unavailable)
            return
        # the answer in Luigi's shape and key order: the chosen shard's reply (else the last one's),
        # with the counters summed over the shards asked and their running tasks together
        answers = [self.answers[sid] for sid in self.targets if sid in self.answers]
        counts = merge.merge_counts(answers)
        ordered = _running_in_order(
            [(self.answers[sid], self.seqs.get(sid)) for sid in self.targets if sid in self.answers]
        )
        if ordered is not None:
            counts["running_tasks"] = ordered
        template = chosen if chosen is not None else (answers[-1] if answers else None)
        if template is None:
            out = dict(counts, task_id=None)
        else:
            out = {
                key: counts[key] if key in _MERGED and key in counts else value
                for key, value in template.items()
            }
            for key in _MERGED:
                if key in counts and key not in out:
                    out[key] = counts[key]
            # (a shard's summary is count_pending's answer: Luigi's get_work ends with task_id)
            out.setdefault("task_id", None)
        if out.get("task_id") is None and not out.get("n_pending_tasks") and core.reshard.holding:
            # resharding: this worker's pending tasks may be between their old and new owner, counted
            # nowhere; "nothing pending" would make it quit. Asked again after the switch.
            core.reshard.hold_call(self.call)
            return
        core.reply(self.call, out)


_MERGED = (*merge.COUNTERS, "worker_state", "running_tasks")


def _running_in_order(answers: list[tuple[dict[str, Any], Any]]) -> list[Any] | None:
    """The shards' ``running_tasks`` together in the order they entered RUNNING (their
    ``running_seq``), as one luigid lists them; None if a shard did not say (kept as merged)."""
    pairs: list[tuple[int, int, Any]] = []
    for answer, seqs in answers:
        rows = answer.get("running_tasks") or []
        if not rows:
            continue
        if not isinstance(seqs, list) or len(seqs) != len(rows):
            return None
        pairs.extend((seq, len(pairs), row) for seq, row in zip(seqs, rows, strict=True))
    pairs.sort(key=lambda p: (p[0], p[1]))
    return [row for _, _, row in pairs]


#: fed_get_work's arguments that only the router sets
_FED_KEYS = ("guard", "external_used_resources", "external_greedy")

#: a summary whose choice needs the offers: Luigi's non-trivial worker, a batchable best task
_NOT_PLAIN = SUMMARY_NONTRIVIAL | SUMMARY_BATCH


#: the groups of a greedy event (``SchedulerCore.external_greedy``)
RESERVED, RUNNING = 0, 1


def _events(value: Any, group: int | None = None) -> list[list[Any]]:
    """The well-formed greedy events of a shard's answer (of one ``group``, if given)."""
    if not isinstance(value, list):
        return []
    return [e for e in value if isinstance(e, list) and len(e) == 6 and (group is None or e[3] == group)]


def _ignore(result: Any, err: FederationError | None) -> None:
    pass
