"""What Luigi workers use: :class:`FederationScheduler`, Luigi's RemoteScheduler over ZeroMQ.

Luigi's ``RemoteScheduler`` gets one proxy method per ``@rpc_method`` at
import time; each proxy fills in every default and calls
``self._request("/api/<method>", data)``.  We keep all of that and replace
only ``_request``: the call travels as a msgpack envelope over a DEALER
socket to a shard or a router, with Luigi's own retry policy
(``[core] rpc-retry-attempts`` / ``rpc-retry-wait``, timeout
``rpc-connect-timeout``) and Luigi's own ``RPCError`` when it runs out, so a
worker behaves exactly as it does against ``luigid``.

Usage::

    luigi.build(tasks, worker_scheduler_factory=FederationSchedulerFactory("tcp://127.0.0.1:5555"))
"""

from __future__ import annotations

import json
import logging
from typing import Any

import luigi.interface
import luigi.rpc
from luigi.rpc import RPCError

from federation.errors import ProtocolError, StorageError, TransportError
from federation.transport import ZmqClient

log = logging.getLogger("federation.client")

#: errors worth retrying, like the HTTP client retries connection errors and 5xx
RETRYABLE = (TransportError, StorageError)


class FederationScheduler(luigi.rpc.RemoteScheduler):
    """A ``luigi.rpc.RemoteScheduler`` whose transport is ZeroMQ + msgpack."""

    def __init__(
        self,
        url: str = "tcp://127.0.0.1:5555",
        connect_timeout: float | None = None,
        *,
        retry_attempts: int | None = None,
        retry_wait: float | None = None,
        curve: Any = None,
    ) -> None:
        super().__init__(url=url, connect_timeout=connect_timeout)
        self._fetcher.close()  # the HTTP session Luigi made is never used
        if retry_attempts is not None:
            self._rpc_retry_attempts = retry_attempts
        if retry_wait is not None:
            self._rpc_retry_wait = retry_wait
        # curve: a federation.keys.ClientCurve for a secured federation (fedctl run --key)
        self._client = ZmqClient(
            self._url, timeout=self._connect_timeout, meta={"client": "luigi-worker"}, curve=curve
        )

    def close(self) -> None:
        self._client.close()

    def _call_once(self, method: str, data: dict[str, Any]) -> Any:
        try:
            return self._client.call(method, data)
        except ProtocolError as e:
            if e.message.startswith("cannot encode arguments"):
                # a value msgpack cannot carry but JSON can (an int beyond 64 bits): send what luigid would get
                return self._client.call(method, json.loads(json.dumps(data)))
            raise

    def _request(self, url: str, data: dict[str, Any], attempts: int = 3, allow_null: bool = True) -> Any:
        method = url.rsplit("/", 1)[-1]
        retryer = self._get_retryer()
        retryer.retry = _retry_if(RETRYABLE)
        for _ in range(attempts):
            try:
                response = retryer(self._call_once, method, data)
            except RETRYABLE as e:
                raise RPCError(
                    "Errors (%d attempts) when connecting to remote scheduler %r"
                    % (self._rpc_retry_attempts, self._url),
                    e,
                ) from e
            if allow_null or response is not None:
                return response
        raise RPCError("Received null response from remote scheduler %r" % self._url)


def _retry_if(types: tuple[type[BaseException], ...]) -> Any:
    from tenacity import retry_if_exception_type

    return retry_if_exception_type(types)


class FederationSchedulerFactory(luigi.interface._WorkerSchedulerFactory):
    """``worker_scheduler_factory`` for ``luigi.build``/``luigi.interface.run`` that talks ZeroMQ."""

    def __init__(self, endpoint: str, **scheduler_kwargs: Any) -> None:
        self.endpoint = endpoint
        self.scheduler_kwargs = scheduler_kwargs

    def create_remote_scheduler(self, url: str) -> FederationScheduler:
        # Luigi passes its HTTP scheduler URL; the ZeroMQ endpoint we were given wins.
        return FederationScheduler(self.endpoint, **self.scheduler_kwargs)
