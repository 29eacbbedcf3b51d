"""A client's request as the router holds it until it answers."""

from __future__ import annotations

from typing import Any


class Call:
    """Where to answer, and how many things the answer still waits for.

    ``waits`` counts the relay steps the answer must follow (a status pushed to a mirror, a
    change-feed pull); ``body`` is the shard's reply, held until ``waits`` is back to zero.
    """

    __slots__ = (
        "route",
        "req_id",
        "method",
        "kwargs",
        "request",
        "waits",
        "body",
        "done",
        "principal",
        "user",
    )

    def __init__(
        self,
        route: list[bytes],
        req_id: int,
        method: str,
        kwargs: dict[str, Any] | None,
        request: bytes = b"",
    ) -> None:
        self.route = route
        #: the request body as it came, forwarded to a shard as is
        self.request = request
        self.req_id = req_id
        self.method = method
        self.kwargs = kwargs
        self.waits = 0
        self.body: bytes | None = None
        self.done = False
        #: a scoped principal (federation.auth.Principal) whose reads are filtered to its namespaces
        self.principal: Any = None
        #: the sender's CURVE principal name (None on an unsecured router), for a replayed call
        self.user: str | None = None

    @property
    def args(self) -> dict[str, Any]:
        return self.kwargs or {}
