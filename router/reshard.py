"""The router's side of online resharding: drive a migration, hold calls for moving ids, switch.

A migration goes from the router's placement (*old*) to the one of a new ``federation.toml``
(*new*); a task id *moves* when its owner differs between them (``moving``).  The shard's side
of every step is ``shard/migrate.py``; every step is idempotent, and the router keeps a
*migration record* (a JSON file next to its ``federation.toml``, written atomically before
each phase), so a crash of the router, of any shard, or of ``fedctl`` at any point is resumed:

=========  ==============================================================================
phase      what
=========  ==============================================================================
``out``    every old shard moves its leaving tasks into its durable outbox and fences them
           (``fed_migrate_out``); from the first of these, calls whose routing id moves are
           *held* here (parked) instead of forwarded, and the relay relays nothing about
           moving ids (their old owners no longer have them, their new ones not yet)
``copy``   each source's outbox goes to each target, page by page (``fed_migrate_page`` →
           ``fed_migrate_in``); the record keeps each pair's cursor
``apply``  each target makes its inbox its own tasks in one batch (``fed_migrate_apply``)
``switch`` the commit point (from here on the migration only goes forward): every shard
           serves the new placement and forgets its mirrors' versions of moved tasks
           (``fed_migrate_switch``); then the router records ``cleanup``, rewrites its
           ``federation.toml``, routes by the new placement, forwards the held calls, and
           resynchronises every shard, so each mirror follows its task's new owner
``cleanup``sources drop their outbox; links to shards no longer in the federation close
=========  ==============================================================================

A router that starts with a record in ``out`` to ``switch`` holds moving ids and goes on; one
that starts with a record in ``cleanup`` routes by the new placement at once (whatever its
``federation.toml`` says) and goes on.  A call held longer than
``HOLD_MAX`` seconds is answered ``unavailable`` (Luigi's clients retry it), so a migration
stuck on a shard that is down never turns into client timeouts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from federation import wire
from federation.config import FederationConfig, ShardSpec
from federation.errors import BadArgumentsError, ConfigError, FederationError, TransportError
from federation.placement import Placement
from router.calls import Call
from router.links import LinkState

if TYPE_CHECKING:
    from router.core import RouterCore

log = logging.getLogger("router.reshard")

PHASES = ("out", "copy", "apply", "switch", "cleanup", "done")
#: seconds a held call waits for the switch before it is answered ``unavailable`` (Luigi retries)
HOLD_MAX = 8.0
#: seconds between attempts of a step that failed (a shard down, restarting)
RETRY_AFTER = 0.5
#: seconds between looks at a shard the next step waits for (resynchronising after a step)
READY_POLL = 0.05
PAGE = 2000


def placement_doc(p: Placement) -> dict[str, Any]:
    return {
        "groups": {g: list(m) for g, m in p.groups.items()},
        "namespaces": dict(p.namespaces),
        "default_group": p.default_group,
    }


def record_path(config: FederationConfig) -> str | None:
    """Where the router keeps the migration record: next to its ``federation.toml``."""
    src = config.source
    if not src or src.startswith("<") or not os.path.isfile(src):
        return None
    return src + ".reshard.json"


def effective_config(config: FederationConfig) -> FederationConfig:
    """The config to start a router with: the new one of a migration past its switch."""
    path = record_path(config)
    rec = _load(path) if path else None
    if rec and rec["phase"] == "cleanup":
        return _merged(config, rec["new"])
    return config


def _merged(current: FederationConfig, new_mapping: dict[str, Any]) -> FederationConfig:
    """The new shards and placement, the running router's own settings."""
    new = FederationConfig.from_mapping(new_mapping, source=current.source)
    return current.replace(
        shards=new.shards, groups=new.groups, namespaces=new.namespaces, default_group=new.default_group
    )


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except FileNotFoundError:
        return None
    if not isinstance(rec, dict) or rec.get("phase") not in PHASES:
        raise ConfigError(f"not a migration record: {path}", source=path)
    return rec


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


@dataclass(slots=True)
class Held:
    frames: list[bytes]
    since: float
    #: the sender's CURVE principal (issue 11): the replay is checked as the original was
    user: str | None = None


class Resharder:
    """One router's migrations (see the module docstring).  ``RouterCore`` calls :meth:`hold`
    for every request, :meth:`tick` every turn; the ``reshard_*`` methods are served here."""

    def __init__(self, core: RouterCore, path: str | None) -> None:
        self.core = core
        self.path = path
        self.record: dict[str, Any] | None = _load(path) if path else None
        self.old: Placement | None = None
        self.new: Placement | None = None
        self.held: list[Held] = []
        self.inflight = 0
        self.next_try = 0.0
        self.last_error: str | None = None
        self.stats: dict[str, Any] = {"held": 0, "held_max_s": 0.0, "expired": 0}
        self.holding = False
        if self.record is not None and self.record["phase"] != "done":
            self._arm()

    # -- state ------------------------------------------------------------------------------------
    def _arm(self) -> None:
        rec = self.record
        assert rec is not None
        self.old = Placement(
            rec["old_doc"]["groups"], rec["old_doc"]["namespaces"], rec["old_doc"]["default_group"]
        )
        self.new = Placement(
            rec["new_doc"]["groups"], rec["new_doc"]["namespaces"], rec["new_doc"]["default_group"]
        )
        new_cfg = FederationConfig.from_mapping(rec["new"], source=self.core.config.source)
        for spec in new_cfg.shards:
            if spec.id not in self.core.links:
                add_shard(self.core, spec, new_cfg.group_of_shard(spec.id))
        if rec.get("old"):  # a router restarted after the switch still reaches drained shards to clean up
            old_cfg = FederationConfig.from_mapping(rec["old"], source=self.core.config.source)
            for spec in old_cfg.shards:
                if spec.id not in self.core.links:
                    add_shard(self.core, spec, old_cfg.group_of_shard(spec.id))
        # a router resuming a migration before its routing switch holds at once (outs may be done)
        self._freeze(PHASES.index(rec["phase"]) < PHASES.index("cleanup"))
        self.core.relay.next_fingerprint = self.new.fingerprint
        log.info("router: migration %s resumes at phase %s", rec["id"], rec["phase"])

    def _save(self) -> None:
        if self.path and self.record is not None:
            _write_atomically(self.path, json.dumps(self.record, indent=1, sort_keys=True))

    def _phase(self, phase: str) -> None:
        assert self.record is not None
        now = time.time()
        self.record.setdefault("times", {})[phase] = now
        self.record["phase"] = phase
        self._save()
        log.info("router: migration %s: phase %s", self.record["id"], phase)

    def _freeze(self, on: bool) -> None:
        """Hold calls about moving ids here, and relay nothing about them, until the switch."""
        self.holding = on
        self.core.relay.frozen = self.moving if on else None

    @property
    def active(self) -> bool:
        return self.record is not None and self.record["phase"] != "done"

    # -- held calls -------------------------------------------------------------------------------
    def moving(self, task_id: str) -> bool:
        assert self.old is not None and self.new is not None
        return bool(self.old.owner(task_id) != self.new.owner(task_id))

    def hold(self, frames: list[bytes], user: str | None = None) -> bool:
        """True if this request is about a moving id and waits here for the switch."""
        if not self.holding or len(frames) < 3:
            return False
        key = frames[-2]
        if not key:
            return False
        try:
            task_id = key.decode("utf-8")
        except UnicodeDecodeError:
            return False
        if not self.moving(task_id):
            return False
        self.held.append(Held(frames, self.core.clock(), user))
        self.stats["held"] += 1
        return True

    def hold_call(self, call: Call) -> None:
        """Handle ``call`` again after the switch (it changed nothing; its answer would mislead)."""
        call.done = True
        self.held.append(Held([*call.route, b"", call.request], self.core.clock(), call.user))
        self.stats["held"] += 1

    def _release_held(self) -> None:
        held, self.held = self.held, []
        now = self.core.clock()
        for h in held:
            self.stats["held_max_s"] = max(self.stats["held_max_s"], now - h.since)
            self.core.handle(h.frames, h.user)

    def _expire_held(self, now: float) -> None:
        if not self.held or now - self.held[0].since < HOLD_MAX:
            return
        keep = []
        for h in self.held:
            if now - h.since < HOLD_MAX:
                keep.append(h)
                continue
            self.stats["expired"] += 1
            self.stats["held_max_s"] = max(self.stats["held_max_s"], now - h.since)
            body = h.frames[-1]
            err = TransportError("the task is moving to another shard (resharding); retry")
            self.core.send_front(h.frames[:-2], wire.encode_error(wire.peek_req_id(body), err))
        self.held = keep

    # -- the methods ------------------------------------------------------------------------------
    def serve(self, call: Call) -> None:
        fn = {
            "reshard_plan": self._plan,
            "reshard_apply": self._apply,
            "reshard_status": self._status,
            "reshard_abort": self._abort,
        }[call.method]
        try:
            fn(call)
        except FederationError as e:
            self.core.fail(call, e)

    def _target(self, call: Call) -> FederationConfig:
        raw = call.args.get("config")
        if not isinstance(raw, dict):
            raise BadArgumentsError("config must be the new federation.toml as a table")
        try:
            new = FederationConfig.from_mapping(raw, source=str(call.args.get("source") or "<reshard>"))
        except ConfigError as e:
            raise BadArgumentsError(f"the new configuration is not valid: {e}") from e
        cur = self.core.config
        problems = []
        for spec in new.shards:
            if spec.id in {s.id for s in cur.shards}:
                old = cur.shard(spec.id)
                for attr in ("endpoint", "store", "schema"):
                    if getattr(old, attr) != getattr(spec, attr):
                        problems.append(
                            f"shard {spec.id}: {attr} differs ({getattr(old, attr)!r} -> {getattr(spec, attr)!r}); "
                            "resharding moves tasks between shards, it does not move a shard"
                        )
        if problems:
            raise BadArgumentsError("; ".join(problems))
        return new

    def _plan(self, call: Call) -> None:
        new = self._target(call)
        old_p, new_p = self.core.placement, Placement.from_config(new)
        added = [s for s in new.shard_ids if s not in self.core.links]
        removed = [s for s in self.core.config.shard_ids if s not in new.shard_ids]
        down = [sid for sid, link in self.core.links.items() if link.state is LinkState.DOWN]
        if down:
            raise TransportError(f"shard(s) {', '.join(down)} down: cannot count their tasks")
        old_doc, new_doc = placement_doc(old_p), placement_doc(new_p)

        def done(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            if errors:
                self.core.fail(call, errors[0][1])
                return
            moves = {sid: dict(r.get("moves") or {}) for sid, r in results}
            self.core.reply(
                call,
                {
                    "moves": moves,
                    "total": sum(n for m in moves.values() for n in m.values()),
                    "tasks": {sid: r.get("tasks", 0) for sid, r in results},
                    "added": added,
                    "removed": removed,
                    "unchanged": old_p.fingerprint == new_p.fingerprint and not added and not removed,
                    "placement": {"old": old_p.fingerprint, "new": new_p.fingerprint},
                    "active": self.record["id"] if self.active and self.record else None,
                },
            )

        ids = [s for s in self.core.config.shard_ids if s in self.core.links]
        self.core.gather(ids, "fed_migrate_plan", {"old": old_doc, "new": new_doc}, done)

    def _apply(self, call: Call) -> None:
        new = self._target(call)
        new_p = Placement.from_config(new)
        if self.active:
            assert self.record is not None
            if self.record["new_doc"] != placement_doc(new_p) or sorted(self.record["new_shards"]) != sorted(
                new.shard_ids
            ):
                raise BadArgumentsError(
                    f"migration {self.record['id']} to another configuration is in progress "
                    f"(phase {self.record['phase']}): resume it with its own file, then reshard again"
                )
            self.core.reply(call, self.status())
            return
        rec = self.record
        if (
            rec
            and not rec.get("aborted")
            and rec["new_doc"] == placement_doc(new_p)
            and sorted(rec["new_shards"]) == sorted(new.shard_ids)
        ):
            self.core.reply(call, self.status())  # done already (asked again after a crash): its summary
            return
        old_p = self.core.placement
        added = [s for s in new.shard_ids if s not in self.core.links]
        removed = [s for s in self.core.config.shard_ids if s not in new.shard_ids]
        if old_p.fingerprint == new_p.fingerprint and not added and not removed:
            raise BadArgumentsError("nothing to reshard: the placement and the shards are unchanged")
        self.record = {
            "id": time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
            "phase": "out",
            "old_doc": placement_doc(old_p),
            "new_doc": placement_doc(new_p),
            "old_shards": self.core.config.shard_ids,
            "new_shards": new.shard_ids,
            "new": new.to_mapping(),
            "old": self.core.config.to_mapping(),
            "moves": {},
            "cursors": {},
            "copied": 0,
            "started": time.time(),
            "times": {"out": time.time()},
        }
        self.stats = {"held": 0, "held_max_s": 0.0, "expired": 0}
        self._save()
        self._arm()
        self._freeze(False)  # from the first fed_migrate_out on
        self.next_try = 0.0
        log.info(
            "router: migration %s started (%s -> %s)", self.record["id"], old_p.fingerprint, new_p.fingerprint
        )
        self.core.reply(call, self.status())

    def _abort(self, call: Call) -> None:
        """Give up a migration that has not moved anything yet (e.g. a new shard that never came
        up): links to its new shards close, the record says ``aborted``.  Once a source has been
        asked to move its tasks out, only going forward is safe: refused."""
        rec = self.record
        if rec is None or not self.active:
            raise BadArgumentsError("no migration in progress")
        if rec.get("outs_sent") or rec["phase"] != "out":
            raise BadArgumentsError(
                f"migration {rec['id']} is moving tasks (phase {rec['phase']}): it can only be finished "
                "(start the shards it waits for); fedctl reshard apply follows it"
            )
        for sid in [s for s in self.core.links if s not in rec["old_shards"]]:
            remove_shard(self.core, sid)
        self._freeze(False)
        self.core.relay.next_fingerprint = None
        rec["aborted"] = True
        self._phase("done")
        log.info("router: migration %s aborted before moving anything", rec["id"])
        self.core.reply(call, self.status())

    def _status(self, call: Call) -> None:
        self.core.reply(call, self.status())

    def status(self) -> dict[str, Any]:
        rec = self.record or {}
        total = sum(n for m in (rec.get("moves") or {}).values() for n in m.values())
        return {
            "id": rec.get("id"),
            "phase": rec.get("phase"),
            "active": self.active,
            "moves": rec.get("moves") or {},
            "total": total,
            "copied": rec.get("copied", 0),
            "sources_out": len(rec.get("moves") or {}),
            "sources": len(rec.get("old_shards") or ()),
            "times": rec.get("times") or {},
            "started": rec.get("started"),
            "held_now": len(self.held),
            "held": self.stats["held"],
            "held_max_s": round(self.stats["held_max_s"], 3),
            "held_expired": self.stats["expired"],
            "error": self.last_error,
            "aborted": bool(rec.get("aborted")),
        }

    # -- the steps ----------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        self._expire_held(now)
        if not self.active or self.inflight or now < self.next_try:
            return
        assert self.record is not None
        phase = self.record["phase"]
        step = getattr(self, f"_step_{phase}")
        step()

    def _ready(self, ids: list[str]) -> bool:
        for sid in ids:
            link = self.core.links.get(sid)
            if link is None or link.state is not LinkState.READY:
                self._wait(f"waiting for shard {sid} ({link.state.value if link else 'unknown'})", READY_POLL)
                return False
        return True

    def _wait(self, why: str, after: float = RETRY_AFTER) -> None:
        self.last_error = why
        self.next_try = self.core.clock() + after

    def _calls(
        self,
        calls: list[tuple[str, str, dict[str, Any]]],
        done: Callable[[list[tuple[str, Any]]], None],
    ) -> None:
        """Send every ``(shard, method, kwargs)``; ``done(results)`` if all succeeded, else retry later."""
        left = [len(calls)]
        results: list[tuple[str, Any]] = []
        errors: list[str] = []
        self.inflight += 1
        if not calls:
            self.inflight -= 1
            done([])
            return

        def one(sid: str) -> Callable[[Any, FederationError | None], None]:
            def cb(result: Any, err: FederationError | None) -> None:
                if err is not None:
                    errors.append(f"{sid}: {err.message or err.code}")
                else:
                    results.append((sid, result))
                left[0] -= 1
                if left[0] == 0:
                    self.inflight -= 1
                    if errors:
                        self._wait("; ".join(errors))
                        log.warning("router: migration step failed (retrying): %s", self.last_error)
                        return
                    self.last_error = None
                    try:
                        done(results)
                    except Exception as e:
                        log.error("router: migration step failed", exc_info=True)
                        self._wait(f"{type(e).__name__}: {e}")

            return cb

        for sid, method, kwargs in calls:
            self.core.pool.call(sid, method, kwargs, one(sid), timeout=max(self.core.timeout, 30.0))

    def _step_out(self) -> None:
        rec = self.record
        assert rec is not None
        todo = [s for s in rec["old_shards"] if s not in rec["moves"]]
        if not self._ready(todo + [s for s in rec["new_shards"] if s not in rec["old_shards"]]):
            return
        kw = {"mig": rec["id"], "old": rec["old_doc"], "new": rec["new_doc"]}
        if not rec.get("outs_sent"):
            rec["outs_sent"] = True  # from here on the migration can only go forward
            self._save()
        self._freeze(True)  # calls sent to a source before its out are in its export (same FIFO)

        def done(results: list[tuple[str, Any]]) -> None:
            for sid, r in results:
                rec["moves"][sid] = {t: n for t, n in (r.get("moves") or {}).items() if n}
            self._phase("copy")

        self._calls([(s, "fed_migrate_out", kw) for s in todo], done)

    def _pairs(self) -> list[tuple[str, str]]:
        rec = self.record
        assert rec is not None
        return sorted((s, t) for s, m in rec["moves"].items() for t, n in m.items() if n)

    def _step_copy(self) -> None:
        rec = self.record
        assert rec is not None
        pending = [
            (s, t) for s, t in self._pairs() if rec["cursors"].get(f"{s}>{t}", ["", False])[1] is not True
        ]
        if not pending:
            self._phase("apply")
            return
        if not self._ready(sorted({x for p in pending for x in p})):
            return
        self.inflight += 1
        left = [len(pending)]

        def finish() -> None:
            left[0] -= 1
            if left[0] == 0:
                self.inflight -= 1

        for s, t in pending:
            self._copy_pair(s, t, finish)

    def _copy_pair(self, s: str, t: str, finish: Callable[[], None]) -> None:
        rec = self.record
        assert rec is not None
        key = f"{s}>{t}"
        after = rec["cursors"].get(key, ["", False])[0]

        def got(page: Any, err: FederationError | None) -> None:
            if err is not None or not isinstance(page, dict):
                self._wait(f"page {key}: {err.message if err else 'bad answer'}")
                finish()
                return

            def kept(result: Any, err2: FederationError | None) -> None:
                if err2 is not None:
                    self._wait(f"import {key}: {err2.message or err2.code}")
                    finish()
                    return
                if isinstance(result, dict) and not result.get("skipped"):
                    rec["copied"] = rec.get("copied", 0) + len(page["tasks"])
                rec["cursors"][key] = [page["last"], bool(page["done"])]
                self._save()
                if page["done"]:
                    finish()
                else:
                    self._copy_pair(s, t, finish)

            self.core.pool.call(
                t, "fed_migrate_in", {"mig": rec["id"], "source": s, "page": page}, kept, timeout=60.0
            )

        self.core.pool.call(
            s,
            "fed_migrate_page",
            {"mig": rec["id"], "target": t, "after": after, "limit": PAGE},
            got,
            timeout=60.0,
        )

    def _step_apply(self) -> None:
        rec = self.record
        assert rec is not None
        targets = sorted({t for _s, t in self._pairs()} - set(rec.get("applied") or ()))
        if not self._ready(targets):
            return

        def done(results: list[tuple[str, Any]]) -> None:
            rec.setdefault("applied", []).extend(sid for sid, _ in results)
            # the commit point: from here on the migration only goes forward
            self._phase("switch")

        self._calls(
            [(t, "fed_migrate_apply", {"mig": rec["id"], "new": rec["new_doc"]}) for t in targets], done
        )

    def _switch_router(self) -> None:
        """Every shard serves the new placement: the router routes by it (recorded first)."""
        rec = self.record
        assert rec is not None
        self._phase("cleanup")
        new = _merged(self.core.config, rec["new"])
        src = self.core.config.source
        if src and os.path.isfile(src):
            try:
                _write_atomically(src, FederationConfig.from_mapping(rec["new"], source=src).to_toml())
            except OSError as e:
                log.error("router: cannot rewrite %s (the migration record keeps the placement): %s", src, e)
        switch_placement(self.core, new)
        self._freeze(False)
        self._release_held()

    def _step_switch(self) -> None:
        rec = self.record
        assert rec is not None
        ids = [
            s
            for s in dict.fromkeys(rec["old_shards"] + rec["new_shards"])
            if s not in (rec.get("switched") or ())
        ]
        if not self._ready(ids):
            return
        kw = {"mig": rec["id"], "old": rec["old_doc"], "new": rec["new_doc"]}

        def done(results: list[tuple[str, Any]]) -> None:
            # every shard has forgotten its mirrors' versions from the old owners, and nothing about a
            # moving id was relayed since the outs: the new owners' statuses now reach every mirror
            rec.setdefault("switched", []).extend(sid for sid, _ in results)
            self._switch_router()

        self._calls([(s, "fed_migrate_switch", kw) for s in ids], done)

    def _step_cleanup(self) -> None:
        rec = self.record
        assert rec is not None
        ids = [s for s in rec["old_shards"] if s in rec["moves"] and s not in (rec.get("cleaned") or ())]
        if not self._ready(ids):
            return

        def done(results: list[tuple[str, Any]]) -> None:
            rec.setdefault("cleaned", []).extend(sid for sid, _ in results)
            for sid in [s for s in self.core.links if s not in rec["new_shards"]]:
                remove_shard(self.core, sid)
            self._phase("done")
            self.core.relay.next_fingerprint = None
            log.info(
                "router: migration %s done: %d task(s) moved in %.1f s",
                rec["id"],
                sum(n for m in rec["moves"].values() for n in m.values()),
                rec["times"]["done"] - rec["started"],
            )

        self._calls([(s, "fed_migrate_cleanup", {"mig": rec["id"]}) for s in ids], done)


# -- the router's shard set and placement, changed at run time -------------------------------------
def add_shard(core: RouterCore, spec: ShardSpec, group: str) -> None:
    """A link to a shard the router did not know (a shard being added)."""
    from router.relay import Feed
    from router.resources import ShardUsage

    core.pool.add_link(spec, group)
    core.relay.feeds[spec.id] = Feed()
    core.resources.shards[spec.id] = ShardUsage()


def remove_shard(core: RouterCore, sid: str) -> None:
    """Forget a shard that left the federation (drained): its link, feed, usage, worker entries."""
    from router.resources import ShardUsage

    core.pool.remove_link(sid)
    core.relay.feeds.pop(sid, None)
    # a get_work's offers from it may still be on their way: it stays known, using nothing
    core.resources.shards[sid] = ShardUsage()
    for task_id in [t for t, subs in core.relay.subs.items() if sid in subs]:
        core.relay._unsubscribe(task_id, sid)
    for ws in core.workers.workers.values():
        ws.shards.pop(sid, None)
    for table in (core.workers.batches, core.workers.pinned):
        for k in [k for k, v in table.items() if v == sid]:
            del table[k]


def switch_placement(core: RouterCore, config: FederationConfig) -> None:
    """Route by ``config``'s placement from now on; the relay forgets its subscriptions and
    resynchronises every shard (mirrors follow their task's new owner)."""
    placement = Placement.from_config(config)
    core.config = config
    core.placement = placement
    core.owner = placement.owner
    core.merge_context = dataclasses.replace(core.merge_context, owner=placement.owner)
    core.workers.home = placement.owner
    relay = core.relay
    relay.owner = placement.owner
    relay.fingerprint = placement.fingerprint
    relay.subs.clear()
    relay.subs_by_owner = defaultdict(set)
    relay.prio_sent.clear()
    relay.prio_reraised.clear()
    for sid, link in core.links.items():
        if sid in config.shard_ids:
            link.group = config.group_of_shard(sid)
        if link.state in (LinkState.READY, LinkState.SYNCING):
            link.state = LinkState.UNSYNCED
            link.next_sync = 0.0
    log.info("router: routing by placement %s", placement.fingerprint)
