"""The ``:`` command line: names, aliases, parsing and completion (pure, no Textual).

``parse`` turns a line into a :class:`Command`; ``complete`` proposes the
rest of a half-typed line (a command name, then a status, namespace or
family), which the prompt shows as ghost text and accepts with Tab or →.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tui.model import STATUSES


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    aliases: tuple[str, ...]
    usage: str
    help: str
    #: what the first argument completes from: "status", "namespace", "family", or None
    arg: str | None = None


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("shards", ("sh", "shard", "s"), ":shards", "every shard: state, latency, counts, store"),
    CommandSpec(
        "namespaces",
        ("ns", "namespace", "n"),
        ":ns [NAMESPACE]",
        "business units; with a name, that namespace's tasks",
        arg="namespace",
    ),
    CommandSpec(
        "tasks",
        ("t", "task"),
        ":tasks [STATUS] [ns=NS] [family=F]",
        "tasks, narrowed on the router",
        arg="status",
    ),
    CommandSpec("workers", ("w", "wk", "worker"), ":workers", "live workers and what they run"),
    CommandSpec("status", ("st",), ":status STATUS|all", "narrow the task list to one status", arg="status"),
    CommandSpec("family", ("fam",), ":family FAMILY|all", "narrow the task list to one family", arg="family"),
    CommandSpec("filter", ("grep",), ":filter REGEX", "same as / (a leading ! inverts)"),
    CommandSpec("faults", ("f",), ":faults", "toggle faults only"),
    CommandSpec("refresh", ("r",), ":refresh [SECONDS]", "poll now, or set the refresh interval"),
    CommandSpec(
        "sort",
        ("so",),
        ":sort [COLUMN] [desc]",
        "sort the view by a column (no column: its own order)",
        arg="column",
    ),
    CommandSpec(
        "ctx",
        ("context", "contexts"),
        ":ctx [NAME]",
        "switch federation ([tui.contexts]); no name lists them",
        arg="context",
    ),
    CommandSpec(
        "logs",
        ("log", "l"),
        ":logs [NAME]",
        "fedctl up's process logs (router, shard-s0...), f follows",
        arg="log",
    ),
    CommandSpec("pause", (), ":pause", "pause scheduling on every shard (asks first)"),
    CommandSpec("unpause", ("resume",), ":unpause", "resume scheduling (asks first)"),
    CommandSpec("help", ("h", "?"), ":help", "keys and commands"),
    CommandSpec("quit", ("q", "q!", "exit"), ":q", "leave"),
)

_BY_NAME = {alias: spec for spec in COMMANDS for alias in (spec.name, *spec.aliases)}


class CommandError(ValueError):
    """A line that is not a command; the message says what would be."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    args: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)


def parse(line: str) -> Command:
    words = line.strip().lstrip(":").split()
    if not words:
        raise CommandError("empty command")
    spec = _BY_NAME.get(words[0].lower())
    if spec is None:
        near = [s.name for s in COMMANDS if s.name.startswith(words[0].lower()[:2])]
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise CommandError(f"unknown command {words[0]!r}{hint}; :help lists them")
    args: list[str] = []
    options: dict[str, str] = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if eq and key:
            options[key.lower()] = value
        else:
            args.append(word)
    if spec.name in ("tasks", "status"):
        # statuses are Luigi's upper-case names; accept any case and the "all" reset
        args = [a.upper() if a.upper() in STATUSES else a for a in args]
        for a in args:
            if a.upper() not in (*STATUSES, "ALL"):
                raise CommandError(f"unknown status {a!r}; one of {', '.join(STATUSES)} or all")
    if spec.name == "refresh" and args:
        try:
            if float(args[0]) <= 0:
                raise ValueError
        except ValueError:
            raise CommandError(f"refresh needs a positive number of seconds, got {args[0]!r}") from None
    if spec.name in ("ctx", "logs", "sort") and options:
        raise CommandError(f":{spec.name} takes no key=value options")
    unknown = set(options) - {"ns", "namespace", "family", "status"}
    if unknown:
        raise CommandError(f"unknown option {sorted(unknown)[0]!r}; use ns=, family= or status=")
    return Command(spec.name, tuple(args), options)


def complete(
    line: str,
    *,
    namespaces: Iterable[str] = (),
    families: Iterable[str] = (),
    contexts: Iterable[str] = (),
    logs: Iterable[str] = (),
    columns: Iterable[str] = (),
) -> str | None:
    """The whole line completed, or None when nothing fits (prefix match, case-insensitive)."""
    raw = line.lstrip(":")
    lead = line[: len(line) - len(raw)]
    if not raw:
        return None
    if " " not in raw:
        word = raw.lower()
        for candidate in COMMANDS:
            for name in (candidate.name, *candidate.aliases):
                if name.startswith(word) and name != word:
                    return lead + name
        return None
    head, _, rest = raw.partition(" ")
    spec = _BY_NAME.get(head.lower())
    if spec is None or spec.arg is None:
        return None
    arg: str = spec.arg
    words = rest.split(" ")
    current = words[-1]
    done = " ".join(words[:-1])
    prefix = f"{lead}{head} {done + ' ' if done else ''}"
    key, eq, value = current.partition("=")
    if eq:
        pool = {"ns": namespaces, "namespace": namespaces, "family": families, "status": STATUSES}.get(
            key.lower(), ()
        )
        match = _first_match(value, pool)
        return f"{prefix}{key}={match}" if match and match != value else None
    pool = {
        "status": (*STATUSES, "all"),
        "namespace": namespaces,
        "family": (*families, "all"),
        "context": contexts,
        "log": logs,
        "column": columns,
    }[arg]
    match = _first_match(current, pool)
    if match is None and spec.name == "tasks":
        match = _first_match(current, ("ns=", "family="))
    return prefix + match if match and match != current else None


def _first_match(prefix: str, pool: Iterable[str]) -> str | None:
    if not prefix:
        return None
    low = prefix.lower()
    for item in sorted(set(pool)):
        if item.lower().startswith(low):
            return item
    return None


def help_lines() -> list[tuple[str, str, str]]:
    """(usage, aliases, what it does) for the help screen."""
    return [(spec.usage, " ".join(f":{a}" for a in spec.aliases), spec.help) for spec in COMMANDS]
