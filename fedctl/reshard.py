"""``fedctl reshard plan|apply|status``: online resharding through the router.

``plan --to NEW.toml`` asks the router what would move (tasks per source → target shard) and
changes nothing.  ``apply --to NEW.toml`` starts the migration (``router/reshard.py``) and
follows it with a progress bar until it is done; run it again after anything crashed (this
command, the router, a shard) and it follows the same migration where it is.  The router does
the work and keeps the migration record, so stopping this command stops nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from federation.config import FederationConfig, read_toml
from federation.errors import ConfigError, TransportError


def load_target(path: str) -> FederationConfig:
    """The new ``federation.toml`` as written (no environment or Luigi layers); store paths
    relative to its folder become absolute."""
    if not path:
        raise ConfigError("--to is required: the federation.toml to reshard to")
    return FederationConfig.from_mapping(
        read_toml(path), source=path, base_dir=os.path.dirname(os.path.abspath(path))
    )


def format_plan(plan: dict[str, Any]) -> str:
    lines = []
    if plan.get("active"):
        lines.append(f"a migration is in progress: {plan['active']} (fedctl reshard status)")
    if plan.get("unchanged"):
        lines.append("nothing to reshard: the placement and the shards are unchanged")
        return "\n".join(lines)
    if plan.get("added"):
        lines.append(f"shards added:   {', '.join(plan['added'])} (start them before apply)")
    if plan.get("removed"):
        lines.append(f"shards drained: {', '.join(plan['removed'])} (stop them after apply)")
    lines.append(f"placement {plan['placement']['old']} -> {plan['placement']['new']}")
    lines.append(f"{'from':<12} {'to':<12} {'tasks':>8}")
    for src, moves in sorted(plan["moves"].items()):
        for dst, n in sorted(moves.items()):
            lines.append(f"{src:<12} {dst:<12} {n:>8}")
    held = sum((plan.get("tasks") or {}).values())
    lines.append(f"{plan['total']} of {held} task records would move")
    return "\n".join(lines)


def format_done(st: dict[str, Any]) -> str:
    if st.get("aborted"):
        return f"migration {st['id']} was aborted before it moved anything"
    times = st.get("times") or {}
    order = ["out", "copy", "apply", "switch", "cleanup", "done"]
    spans = []
    for a, b in zip(order, order[1:], strict=False):
        if a in times and b in times:
            spans.append(f"{a} {times[b] - times[a]:.2f} s")
    total = (times.get("done") or time.time()) - (st.get("started") or time.time())
    moves = ", ".join(f"{s}→{t}: {n}" for s, m in sorted(st["moves"].items()) for t, n in sorted(m.items()))
    return (
        f"migration {st['id']} done: {st['total']} task(s) moved ({moves or 'none'}) in {total:.2f} s "
        f"({'; '.join(spans)}); calls held {st['held']}, longest {st['held_max_s']:.2f} s, "
        f"answered 'retry' {st['held_expired']}"
    )


def follow(
    call: Callable[[str, dict[str, Any]], Any],
    *,
    give_up_after: float,
    interval: float = 0.25,
    show: bool = True,
) -> dict[str, Any]:
    """Poll ``reshard_status`` with a progress bar until the migration is done; a router that
    is away (restarting) is waited for up to ``give_up_after`` seconds."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    away_since: float | None = None
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        disable=not show,
        transient=False,
    ) as bar:
        task = bar.add_task("out", total=None, note="")
        while True:
            try:
                st = call("reshard_status", {})
                away_since = None
            except TransportError as e:
                now = time.monotonic()
                away_since = away_since or now
                if now - away_since > give_up_after:
                    raise TransportError(
                        f"the router has been unavailable for {give_up_after:g} s: {e}; the migration goes "
                        "on when it is back (fedctl reshard status)"
                    ) from e
                bar.update(task, note=f"router unavailable, waiting: {e.message}")
                time.sleep(interval)
                continue
            total = st.get("total") or None
            note = st.get("error") or (f"held calls: {st.get('held_now', 0)}" if st.get("held_now") else "")
            bar.update(
                task, description=f"{st.get('phase')}", total=total, completed=st.get("copied", 0), note=note
            )
            if not st.get("active"):
                return dict(st)
            time.sleep(interval)


def _client(args: argparse.Namespace) -> Any:
    from fedctl.secure import client_curve
    from federation.transport import ZmqClient

    # a secured federation: an admin's key applies and aborts, an operator's plans and follows
    return ZmqClient(args.router, timeout=args.timeout, curve=client_curve(args.key, args.server_key))


def cmd_reshard_plan(args: argparse.Namespace) -> int:
    target = load_target(args.to)
    client = _client(args)
    try:
        plan = client.call("reshard_plan", {"config": target.to_mapping(), "source": args.to})
    finally:
        client.close()
    print(format_plan(plan))
    return 0


def cmd_reshard_apply(args: argparse.Namespace) -> int:
    target = load_target(args.to)
    client = _client(args)
    try:
        st = client.call("reshard_apply", {"config": target.to_mapping(), "source": args.to})
        if st.get("active"):
            print(f"migration {st['id']} (phase {st['phase']}): following it; Ctrl-C stops following only")
            st = follow(client.call, give_up_after=args.give_up_after, show=not args.quiet)
    finally:
        client.close()
    print(format_done(st))
    return 0


def cmd_reshard_abort(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        st = client.call("reshard_abort", {})
    finally:
        client.close()
    print(f"migration {st['id']} aborted: nothing was moved")
    return 0


def cmd_reshard_status(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        st = client.call("reshard_status", {})
    finally:
        client.close()
    if not st.get("id"):
        print("no migration recorded by this router")
        return 0
    if st.get("active"):
        print(
            f"migration {st['id']}: phase {st['phase']}, {st['copied']}/{st['total']} task(s) copied, "
            f"{st['held_now']} call(s) held" + (f"; {st['error']}" if st.get("error") else "")
        )
        return 0
    print(format_done(st))
    return 0


def add_parser(sub: Any, env: Callable[..., Any], default_router: str) -> None:
    """``fedctl reshard`` and its commands (registered by ``fedctl.cli.build_parser``)."""
    reshard = sub.add_parser(
        "reshard",
        help="move task ownership to a new federation.toml while everything runs",
        description="Online resharding: add a shard to a group, drain one, or move a namespace to another "
        "group. Every task whose owner changes moves with its whole state; calls about those tasks wait "
        "in the router during the move. See docs/resharding.md.",
    )
    reshard_sub = reshard.add_subparsers(dest="reshard_cmd", metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, to: bool = True) -> None:
        p.add_argument(
            "--router",
            default=env("FED_ROUTER", default_router),
            help=f"router ZeroMQ endpoint (default {default_router}) [FED_ROUTER]",
        )
        p.add_argument(
            "--timeout", type=float, default=60.0, help="seconds to wait for one answer of the router"
        )
        from fedctl.cli import key_options

        key_options(p)
        if to:
            p.add_argument("--to", required=True, help="the new federation.toml")

    plan = reshard_sub.add_parser(
        "plan",
        help="print what would move (tasks per source -> target shard); changes nothing",
        description="Ask the router how many tasks each shard would hand to each other shard if the "
        "federation were resharded to --to. Changes nothing.",
    )
    common(plan)
    plan.set_defaults(func=cmd_reshard_plan)
    apply = reshard_sub.add_parser(
        "apply",
        help="reshard to a new federation.toml, with progress; run again to resume",
        description="Start the migration to --to (new shards must be running, from --to) and follow it to "
        "the end. The router does the work and records each phase: after a crash of anything, run the "
        "same command again. The router rewrites its federation.toml at the switch.",
    )
    common(apply)
    apply.add_argument(
        "--give-up-after",
        type=float,
        default=600.0,
        help="seconds to keep waiting for a router that is away before exiting (the migration goes on)",
    )
    apply.add_argument("--quiet", action="store_true", help="no progress bar")
    apply.set_defaults(func=cmd_reshard_apply)
    status = reshard_sub.add_parser("status", help="where the router's migration is")
    common(status, to=False)
    status.set_defaults(func=cmd_reshard_status)
    abort = reshard_sub.add_parser(
        "abort",
        help="give up a migration that has not moved anything yet (a new shard that never came up)",
        description="Refused once tasks are moving: such a migration can only be finished.",
    )
    common(abort, to=False)
    abort.set_defaults(func=cmd_reshard_abort)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(2)
