"""Who may call what: principals, roles, namespace patterns, and the policy (docs/security.md).

Pure: no sockets, no files.  The router asks :meth:`Authorizer.authorize` before it serves a
call, a shard asks :func:`shard_allows`, the HTTP gateway :meth:`Authorizer.principal_of_token`.

* A **principal** is a name with a role and the namespaces it may touch.  Every ZeroMQ client
  key and every HTTP token maps to one (``[[principals]]`` of ``federation.toml``).
* **Roles** are ordered: ``viewer`` < ``worker`` < ``operator`` < ``admin``; a role may call
  every method of the roles below it.  ``gateway`` is the HTTP gateway's own key: it calls
  nothing itself and asserts, per request, the principal whose token the HTTP client showed.
* **Namespace patterns**: ``*`` is every namespace (the empty one too); ``fin.*`` is ``fin``
  and every namespace below it; any other pattern is that namespace exactly.  A principal
  whose patterns are just ``*`` is *unscoped*.
* The **policy** (:data:`POLICY`) names, for every method, the least role and the scope:
  ``task`` methods are checked against the namespace of the task they name, ``global`` ones
  (federation-wide writes) need an unscoped principal, ``open`` ones only the role.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from federation.errors import AccessDenied, FederationError, Unauthenticated

VIEWER = "viewer"
WORKER = "worker"
OPERATOR = "operator"
ADMIN = "admin"
#: the HTTP gateway's key: may assert a principal per request, may call nothing as itself
GATEWAY = "gateway"
ROLES = (VIEWER, WORKER, OPERATOR, ADMIN)
_RANK = {role: i for i, role in enumerate(ROLES)}

#: the principal name of the router's own key, as the shards see it
ROUTER_PRINCIPAL = "router"
#: the principal name of the gateway's key, as the router sees it
GATEWAY_PRINCIPAL = "gateway"
#: the meta key in which the gateway names the principal it asserts
ASSERT_META = "principal"

__all__ = ["AccessDenied", "Authorizer", "Principal", "Unauthenticated", "shard_allows"]

OPEN = "open"
TASK = "task"
GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Rule:
    role: str
    scope: str = OPEN
    #: the argument that names the task, for ``task`` scope
    arg: str = "task_id"


def _rules(role: str, scope: str, names: Iterable[str], arg: str = "task_id") -> dict[str, Rule]:
    return dict.fromkeys(names, Rule(role, scope, arg))


#: method -> the least role and the scope it is checked at (Luigi's 39 RPC methods and the federation's own)
POLICY: dict[str, Rule] = {
    # reads of the whole federation
    **_rules(
        VIEWER,
        OPEN,
        (
            "task_list",
            "worker_list",
            "resource_list",
            "graph",
            "task_search",
            "is_paused",
            "is_pause_enabled",
            "has_task_history",
            "federation_health",
            "owner",
            "count_pending",
        ),
    ),
    # reads of one task: its namespace must be the caller's
    **_rules(
        VIEWER,
        TASK,
        (
            "dep_graph",
            "inverse_dep_graph",
            "fetch_error",
            "get_task_status_message",
            "get_task_progress_percentage",
            "get_running_task_resources",
            "get_scheduler_message_response",
            "task_events",
        ),
    ),
    # what a Luigi worker sends
    **_rules(
        WORKER, OPEN, ("get_work", "ping", "add_worker", "add_task_batcher", "announce_scheduling_failure")
    ),
    **_rules(
        WORKER,
        TASK,
        (
            "add_task",
            "set_task_status_message",
            "set_task_progress_percentage",
            "decrease_running_task_resources",
            "report_task_statistics",
            "add_scheduler_message_response",
        ),
    ),
    # what the visualiser's and the TUI's buttons do
    **_rules(OPERATOR, TASK, ("mark_as_done", "forgive_failures", "re_enable_task")),
    "send_scheduler_message": Rule(OPERATOR, TASK, "task"),
    **_rules(OPERATOR, OPEN, ("disable_worker", "set_worker_processes", "update_metrics_task_started")),
    **_rules(OPERATOR, GLOBAL, ("pause", "unpause", "prune", "update_resource", "update_resources")),
    "prune_history": Rule(ADMIN, GLOBAL),
    # online resharding (docs/resharding.md): the plan and the progress are an operator's to read,
    # moving tasks between shards is an admin's
    **_rules(OPERATOR, GLOBAL, ("reshard_plan", "reshard_status")),
    **_rules(ADMIN, GLOBAL, ("reshard_apply", "reshard_abort")),
}

#: what a shard serves to an admin key besides the router (everything else only to the router)
SHARD_READS = frozenset(
    {
        "shard_info",
        "fed_health",
        "fed_state",
        "fed_task_list",
        "fed_graph",
        "task_list",
        "worker_list",
        "resource_list",
        "task_search",
        "graph",
        "dep_graph",
        "inverse_dep_graph",
        "fetch_error",
        "get_task_status_message",
        "get_task_progress_percentage",
        "get_running_task_resources",
        "get_scheduler_message_response",
        "is_paused",
        "is_pause_enabled",
        "has_task_history",
        "task_events",
        "count_pending",
    }
)


def matches(pattern: str, namespace: str) -> bool:
    """``*`` matches every namespace, ``fin.*`` matches ``fin`` and below, else equality."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        base = pattern[:-2]
        return namespace == base or namespace.startswith(base + ".")
    return namespace == pattern


def check_pattern(pattern: Any) -> str | None:
    """Why ``pattern`` is not a namespace pattern, or None."""
    if not isinstance(pattern, str) or not pattern:
        return f'{pattern!r} is not a namespace pattern (e.g. "fin.*", "*")'
    body = pattern[:-2] if pattern.endswith(".*") else pattern
    if pattern != "*" and ("*" in body or body.startswith(".") or body.endswith(".") or ".." in body):
        return f'{pattern!r} is not a namespace pattern ("*", "fin.*" or an exact namespace)'
    return None


def hash_token(token: str) -> str:
    """How a token is stored in ``federation.toml``: hex SHA-256 (tokens are random, 32 bytes)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    namespaces: tuple[str, ...] = ("*",)

    @property
    def unscoped(self) -> bool:
        return "*" in self.namespaces

    def may_touch(self, namespace: str) -> bool:
        return any(matches(p, namespace) for p in self.namespaces)

    def at_least(self, role: str) -> bool:
        return _RANK.get(self.role, -1) >= _RANK[role]


def shard_allows(principal: str | None, method: str) -> FederationError | None:
    """A shard's rule: the router may call anything, an admin key only :data:`SHARD_READS`."""
    if principal == ROUTER_PRINCIPAL:
        return None
    if principal is None:
        return Unauthenticated(f"{method}: this shard serves only the router and admin keys")
    if method in SHARD_READS:
        return None
    return AccessDenied(
        f"{principal} may not call {method} on a shard: shards take changes only from the router"
    )


class Authorizer:
    """The router's (and gateway's) view of the principals and the policy."""

    def __init__(
        self,
        principals: Iterable[Principal],
        namespace_of: Callable[[str], str],
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.principals: dict[str, Principal] = {p.name: p for p in principals}
        self.namespace_of = namespace_of
        #: sha256 hex -> principal name
        self._tokens = dict(tokens or {})

    def principal_of_token(self, token: str) -> Principal | None:
        digest = hash_token(token)
        for known, name in self._tokens.items():
            if hmac.compare_digest(known, digest):
                return self.principals.get(name)
        return None

    def needs_body(self, principal: Principal | None, method: str) -> bool:
        """True when the call must be decoded to be checked (a scoped principal's task call, the
        gateway's assertion); an unscoped principal's call is decided by its method alone."""
        if principal is None or principal.role == GATEWAY:
            return True
        rule = POLICY.get(method)
        return rule is not None and not principal.unscoped and rule.scope == TASK

    def resolve(self, user: str | None, meta: Mapping[str, Any] | None) -> Principal | FederationError:
        """The principal a call runs as: the key's, or the one the gateway asserts in ``meta``."""
        if user is None:
            return Unauthenticated("no client key (this router needs a CURVE key)")
        principal = self.principals.get(user)
        if principal is None:
            return Unauthenticated(f"unknown principal {user!r}")
        if principal.role != GATEWAY:
            return principal
        asserted = (meta or {}).get(ASSERT_META)
        if not isinstance(asserted, str):
            return Unauthenticated("the gateway must name the principal of each request")
        target = self.principals.get(asserted)
        if target is None or target.role == GATEWAY:
            return Unauthenticated(f"unknown principal {asserted!r}")
        return target

    def authorize(
        self, principal: Principal, method: str, kwargs: Mapping[str, Any] | None
    ) -> AccessDenied | None:
        """None when ``principal`` may call ``method`` with ``kwargs`` (None: not decoded, only the
        role is checked, see :meth:`needs_body`); else the error naming principal, method, namespace."""
        rule = POLICY.get(method)
        if rule is None:
            if principal.role == ADMIN:
                return None  # the router answers unknown_method
            return AccessDenied(f"{principal.name} ({principal.role}) may not call {method}")
        if not principal.at_least(rule.role):
            return AccessDenied(
                f"{principal.name} ({principal.role}) may not call {method}: it needs the {rule.role} role"
            )
        if principal.unscoped:
            return None
        if rule.scope == GLOBAL:
            return AccessDenied(
                f"{principal.name} may not call {method}: it changes every namespace and "
                f"{principal.name} is limited to {', '.join(principal.namespaces)}"
            )
        if method == "get_work" and kwargs is not None and kwargs.get("assistant"):
            return AccessDenied(
                f"{principal.name} may not call get_work as an assistant: it would be handed tasks of "
                f"any namespace and {principal.name} is limited to {', '.join(principal.namespaces)}"
            )
        if rule.scope != TASK:
            return None
        task_id = None if kwargs is None else kwargs.get(rule.arg)
        if not isinstance(task_id, str):
            return AccessDenied(f"{principal.name} may not call {method} without a task id ({rule.arg})")
        namespace = self.namespace_of(task_id)
        if principal.may_touch(namespace):
            return None
        return AccessDenied(
            f"{principal.name} may not call {method} on namespace {namespace or '(none)'!r}: "
            f"{principal.name} is limited to {', '.join(principal.namespaces)}"
        )


#: fan-out reads whose answers a scoped principal sees filtered to its namespaces
FILTERED_READS = frozenset({"task_list", "task_search", "graph"})


def filter_read(method: str, result: Any, principal: Principal, namespace_of: Callable[[str], str]) -> Any:
    """``result`` of a fan-out read with only the tasks of ``principal``'s namespaces (an unscoped
    principal, or an answer of another shape, is returned as is)."""
    if principal.unscoped or method not in FILTERED_READS or not isinstance(result, dict):
        return result

    def mine(task_id: Any) -> bool:
        return isinstance(task_id, str) and principal.may_touch(namespace_of(task_id))

    if method == "task_search":
        return {
            group: {t: v for t, v in tasks.items() if mine(t)} if isinstance(tasks, dict) else tasks
            for group, tasks in result.items()
        }
    if method == "task_list" and set(result) == {"num_tasks"}:
        return result  # luigid's "too many to show": a count only, nothing to filter
    return {t: v for t, v in result.items() if mine(t)}
