"""The router's table of each shard's ``get_work`` summaries (docs/federation.md, "`get_work`").

A shard tells the router, on the first reply of each batch that answers the router, which
workers' summaries changed in it (``SchedulerCore.worker_summaries``): what ``get_work`` would
tell the worker there (Luigi's counters, ``running_tasks``), the rank of the task it would hand
out, and whether that choice needs more than a rank.  With that table ``router.getwork`` grants a
worker's ``get_work`` at the shard with the best task directly, guarded by the other shards' best
rank, instead of asking every shard for an offer first.

The table of a shard is used only while it is *in step*:

* every frame is numbered; a frame that does not follow the last one (a reply lost with a
  previous router, a frame the shard could not build) or that comes from an unknown process
  puts the shard out of step until a whole table arrives (``fed_worker_summaries`` asks for one;
  a shard sends one by itself after it (re)starts or reloads its store);
* and a ``get_work`` first waits for the router's own calls that were in flight to the shard
  when it arrived, may give a worker better work there, and may have been acknowledged to a
  client already (``ShardLink.unsettled``, ``after_settled``): a new mirror's first status and
  the feed's relays for an ``add_task`` naming remote dependencies (answered once they are sent:
  a worker registering its tasks sends another ``add_task`` next and need not wait), a batch's
  release, a priority asked again after an ``add_task``, a first mention told from a
  mirror's answer, a replayed worker, statuses pushed after a resynchronisation.  Their answers
  bring the shard's frame first.  The change feed's mirror updates for a report (a dependency
  DONE elsewhere) are not among them: the report is answered only once every mirror answered
  (``Relay._let_go``), so until then they are acknowledged to nobody and are ``concurrent``
  calls (``ShardPool.call``); nor is a grant's push of a RUNNING mirror, which gives nobody
  better work.  Calls sent after the ``get_work`` arrived are concurrent with it
  (what they carry was acknowledged to nobody before), and so are calls forwarded for a client:
  until their answer reaches the client they are concurrent with any ``get_work``, and their
  answer brings the shard's frame first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from federation import wire

if TYPE_CHECKING:
    from router.links import ShardLink, ShardPool

log = logging.getLogger("router.summaries")

#: the router's own calls that cannot give any worker better work on the shard before they are
#: answered to someone (reads, and the calls of a get_work not answered yet); every other call
#: of the router's makes the shard's summaries unusable until it is answered
SETTLED_METHODS = frozenset(
    {
        "fed_changes",
        "fed_status",
        "fed_state",
        "fed_health",
        "fed_touch_workers",
        "fed_add_stakeholders",
        "fed_worker_summaries",
        "fed_offer",
        "fed_get_work",
        "fed_greedy_walk",
        "fed_batch_candidates",
        "fed_batch_claim",
        "fed_task_list",
        "fed_task_search",
        "fed_resource_list",
        "fed_worker_list",
        "fed_display_names",
        "fed_graph",
        "fed_inverse_dep_graph",
        "fed_graph_nodes",
        "shard_info",
        "task_list",
        "task_search",
        "worker_list",
        "resource_list",
        "graph",
        "dep_graph",
        "inverse_dep_graph",
        "fetch_error",
        "count_pending",
        "is_paused",
        "is_pause_enabled",
        "has_task_history",
    }
)

#: a ``fed_relay`` with only these parts is as settled as ``fed_add_stakeholders``, ``fed_status``
#: and ``fed_changes``
SETTLED_RELAY_PARTS = frozenset({"stakeholders", "status", "since"})


def is_settled(method: str, kwargs: dict[str, Any]) -> bool:
    """The router's call ``method(**kwargs)`` leaves every worker's summary on the shard as it was."""
    if method == "fed_relay":
        return not (kwargs.keys() - SETTLED_RELAY_PARTS)
    return method in SETTLED_METHODS


def usable(link: ShardLink) -> bool:
    """The shard's summaries are in step (see ``after_settled`` for calls in flight)."""
    return link.sum_ok


def settled(link: ShardLink, number: int) -> None:
    """The router's unsettling call ``number`` to the shard was answered (or failed)."""
    pending = link.unsettled
    pending.pop(number, None)
    if not link.settle_waiters:
        return
    first = next(iter(pending), None)
    ready = [fn for upto, fn in link.settle_waiters if first is None or first > upto]
    if ready:
        link.settle_waiters = [(u, fn) for u, fn in link.settle_waiters if not (first is None or first > u)]
        for fn in ready:
            fn()


def after_settled(links: list[ShardLink], fn: Callable[[], None]) -> bool:
    """Run ``fn`` once every unsettling call in flight now to these shards was answered; False
    (and ``fn`` not kept) when none is in flight: go on at once."""
    waiting = [link for link in links if link.unsettled]
    if not waiting:
        return False
    left = [len(waiting)]

    def one() -> None:
        left[0] -= 1
        if left[0] == 0:
            fn()

    for link in waiting:
        link.settle_waiters.append((next(reversed(link.unsettled)), one))
    return True


def forget(link: ShardLink) -> None:
    """The shard's table is out of step (down, restarted, a frame missed)."""
    link.sum_ok = False
    link.sum_token = None
    link.sums = {}


def on_frame(pool: ShardPool, link: ShardLink, data: bytes) -> list[str]:
    """A shard's summaries frame ``[token, n, whole, prunes, {worker: summary | None}]``.

    Returns the workers the shard no longer knows (it pruned them: a ``None`` summary, or a
    worker the table had that a whole table leaves out)."""
    try:
        frame = wire.unpack(data)
        token, n, whole, prunes, entries = frame
        if not isinstance(n, int) or not isinstance(whole, bool) or not isinstance(entries, dict):
            raise ValueError("bad header")
        for worker, summary in entries.items():
            if not isinstance(worker, str) or not (summary is None or _well_formed(summary)):
                raise ValueError(f"bad summary of {worker!r:.80}")
    except Exception as e:  # a shard's bug: never a router crash; the table is rebuilt
        log.warning("router: shard %s sent a malformed summaries frame: %s", link.id, e)
        forget(link)
        _ask_whole(pool, link)
        return []
    # a None summary is news of a pruned worker even in a frame out of step (frames come in order)
    gone = [worker for worker, summary in entries.items() if summary is None]
    if whole:
        gone += [worker for worker in link.sums if worker not in entries]
        link.sums = {}
    elif not link.sum_ok or token != link.sum_token or n != link.sum_n + 1:
        if link.sum_ok:
            log.info("router: shard %s's summaries are out of step; asking for all of them", link.id)
        forget(link)
        _ask_whole(pool, link)
        return gone
    sums = link.sums
    for worker, summary in entries.items():
        if summary is None:
            sums.pop(worker, None)
        else:
            sums[worker] = summary
    link.sum_token = token
    link.sum_n = n
    link.sum_ok = True
    link.sum_prunes = bool(prunes)
    return gone


def _well_formed(summary: Any) -> bool:
    return (
        isinstance(summary, list)
        and len(summary) == 5
        and isinstance(summary[0], dict)
        and (summary[1] is None or (isinstance(summary[1], list) and len(summary[1]) == 3))
        and isinstance(summary[2], int)
        and isinstance(summary[3], list)
        and isinstance(summary[4], list)
        and len(summary[4]) == len(summary[0].get("running_tasks") or ())
    )


def _ask_whole(pool: ShardPool, link: ShardLink) -> None:
    if link.sum_asked:
        return
    link.sum_asked = True

    def done(result: Any, err: Any) -> None:
        link.sum_asked = False  # its reply carried the whole table (or the next frame asks again)

    pool.call(link.id, "fed_worker_summaries", {}, done)
