"""``get_work`` across the shards that hold work for a worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from federation.errors import FederationError, ProtocolError, TransportError
from router import merge
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
        self.targets = list(targets)
        self.queue: list[str] = []
        #: each shard's latest answer (offer or grant), for the counters
        self.answers: dict[str, dict[str, Any]] = {}
        self.unavailable: FederationError | None = None
        self.token = False

    def start(self) -> None:
        pool = self.core.pool
        live = []
        for sid in self.targets:
            link = pool.links[sid]
            if link.state is LinkState.DOWN:
                self.unavailable = pool.down_error(link)
            else:
                live.append(sid)
        if len(live) <= 1 or any(pool.links[sid].federated is not True for sid in live):
            self.queue = live
            self.next()
            return
        core = self.core
        versions = {sid: core.resources.version(sid) for sid in live}

        def kwargs(sid: str) -> dict[str, Any]:
            return {**self.call.args, "external_used_resources": core.resources.external_usage(sid)}

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
                if result["reply"].get("worker_state") == merge.DISABLED_STATE:
                    # disabled on one shard is disabled: Luigi's answer to a disabled worker
                    core.reply(self.call, result["reply"])
                    return
                offer = result.get("offer")
                if isinstance(offer, dict):
                    rank = offer.get("rank") or [0, 0]
                    # highest first; among equal priority and time the task that entered its
                    # status first (the stamped number, negated), as in luigid's stable sort;
                    # then the rotation's order (``order``)
                    tie = rank[2] if len(rank) > 2 else 0
                    ranked.append(((bool(offer.get("resend")), rank[0], rank[1], tie), -order, sid))
            ranked.sort(reverse=True)
            self.queue = [sid for _, _, sid in ranked]
            self.next()

        core.gather(live, "fed_offer", kwargs, offered)

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
        self.answers[sid] = reply
        batch_id = reply.get("batch_id")
        if isinstance(batch_id, str):
            core.workers.batch_handed_out(batch_id, sid, self.call.args.get("worker"))
        if reply.get("task_id") is not None or batch_id is not None:
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
        core.reply(self.call, out)


_MERGED = (*merge.COUNTERS, "worker_state", "running_tasks")
