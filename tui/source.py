"""Where the TUI's data comes from: a live router, or a recorded capture.

A :class:`Source` hands out short :class:`Session` objects; a session makes
blocking calls (``session.call(method, kwargs)``) and is only ever used from
one worker thread, never from the UI thread.  Failures are
:class:`~federation.errors.FederationError` subclasses, as from
:class:`~federation.transport.ZmqClient`.

* :class:`RouterSource` talks to the router over ZeroMQ.  Each session owns
  one :class:`ZmqClient` and closes it at the end, so a worker thread never
  leaves a socket behind and a call that timed out can never be answered late
  into the next poll.
* :class:`ReplaySource` serves a capture recorded by :class:`RecordingSource`
  (``fedctl tui --record FILE``, then ``--replay FILE``): one frame per poll,
  calls looked up by method and arguments.  Its clock is the capture's, so a
  replay renders the same screen every time (the snapshot tests use it).

Capture format (JSON)::

    {"format": "luigi-federation-tui-capture", "version": 1, "router": "tcp://...",
     "frames": [{"time": <unix seconds>,
                 "calls": [{"method": str, "kwargs": {...},
                            "result": ... | "error": {"code": str, "message": str},
                            "elapsed_ms": float}]}]}
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from federation.errors import ConfigError, FederationError, error_from_wire
from federation.transport import ZmqClient

CAPTURE_FORMAT = "luigi-federation-tui-capture"
CAPTURE_VERSION = 1

#: methods that change the federation; a replay answers them only if the capture holds them
ACTION_METHODS = frozenset({"re_enable_task", "forgive_failures", "mark_as_done", "pause", "unpause"})


class NotRecorded(FederationError):
    """A replayed capture holds no answer for this call."""

    code = "not_recorded"


class Session(Protocol):
    def call(self, method: str, kwargs: dict[str, Any] | None = None) -> Any:
        """One blocking request; raises a FederationError on failure."""
        ...


class Source(Protocol):
    #: what the header shows as the data's origin (a ZeroMQ endpoint or ``replay:<file>``)
    name: str
    #: False for a capture: nothing the app does can change the data
    live: bool

    def session(self, *, poll: bool = False) -> Any:
        """A context manager yielding a :class:`Session`; ``poll=True`` marks one refresh cycle."""
        ...

    def now(self) -> float:
        """The current time of the data (wall clock, or the replayed frame's)."""
        ...

    def close(self) -> None: ...


def canonical(kwargs: dict[str, Any] | None) -> str:
    """A stable key for a call's arguments (key order does not matter)."""
    return json.dumps(kwargs or {}, sort_keys=True, separators=(",", ":"), default=str)


# -- live ------------------------------------------------------------------------------------


class _ZmqSession:
    def __init__(self, client: ZmqClient) -> None:
        self._client = client

    def call(self, method: str, kwargs: dict[str, Any] | None = None) -> Any:
        return self._client.call(method, dict(kwargs or {}))


class RouterSource:
    """The router reached over ZeroMQ, one short-lived client per session."""

    live = True

    def __init__(self, endpoint: str, *, timeout: float = 3.0, curve: Any = None) -> None:
        #: a federation.keys.ClientCurve on a secured federation (fedctl tui --key)
        self.curve = curve
        if not isinstance(endpoint, str) or "://" not in endpoint:
            raise ConfigError(
                f"--router must be a ZeroMQ endpoint such as tcp://127.0.0.1:5555, got {endpoint!r}"
            )
        self.name = endpoint
        self.endpoint = endpoint
        self.timeout = timeout

    @contextmanager
    def session(self, *, poll: bool = False) -> Iterator[Session]:
        client = ZmqClient(
            self.endpoint, timeout=self.timeout, meta={"client": "fedctl-tui"}, curve=self.curve
        )
        try:
            yield _ZmqSession(client)
        finally:
            client.close()

    def now(self) -> float:
        return time.time()

    def close(self) -> None:
        pass


# -- replay ------------------------------------------------------------------------------------


class ReplaySource:
    """Serves a capture: each ``session(poll=True)`` moves to the next frame (the last one repeats).

    A call is answered from the current frame, else from the nearest earlier
    frame that holds it (a task detail recorded once stays available), else it
    raises :class:`NotRecorded`.  Actions are refused unless recorded: a
    replay never pretends to change anything.
    """

    live = False

    def __init__(self, capture: dict[str, Any] | str | Path) -> None:
        if isinstance(capture, str | Path):
            path = Path(capture)
            try:
                data = json.loads(path.read_text())
            except OSError as e:
                raise ConfigError(f"cannot read the capture: {e.strerror}", source=str(path)) from e
            except json.JSONDecodeError as e:
                raise ConfigError(f"not a JSON capture: {e}", source=str(path)) from e
            self.name = f"replay:{path.name}"
        else:
            data = capture
            self.name = f"replay:{data.get('router', 'capture')}" if isinstance(data, dict) else "replay"
        self._frames = _parse_capture(data, source=self.name)
        self._lock = threading.Lock()
        self._index = -1

    @property
    def frame_index(self) -> int:
        return max(self._index, 0)

    @property
    def frame_count(self) -> int:
        return len(self._frames)

    @contextmanager
    def session(self, *, poll: bool = False) -> Iterator[Session]:
        with self._lock:
            if poll and self._index < len(self._frames) - 1:
                self._index += 1
            index = max(self._index, 0)
        yield _ReplaySession(self, index)

    def answer(self, index: int, method: str, kwargs: dict[str, Any] | None) -> Any:
        key = (method, canonical(kwargs))
        for i in range(index, -1, -1):
            entry = self._frames[i][1].get(key)
            if entry is not None:
                if "error" in entry:
                    raise error_from_wire(entry["error"])
                return entry.get("result")
        if method in ACTION_METHODS:
            raise NotRecorded(f"{method} is not in the capture: a replay changes nothing")
        raise NotRecorded(f"{method}({canonical(kwargs)}) is not in the capture")

    def now(self) -> float:
        return self._frames[max(self._index, 0)][0]

    def close(self) -> None:
        pass


class _ReplaySession:
    def __init__(self, source: ReplaySource, index: int) -> None:
        self._source = source
        self._index = index

    def call(self, method: str, kwargs: dict[str, Any] | None = None) -> Any:
        return self._source.answer(self._index, method, kwargs)


def _parse_capture(data: Any, *, source: str) -> list[tuple[float, dict[tuple[str, str], dict[str, Any]]]]:
    if not isinstance(data, dict) or data.get("format") != CAPTURE_FORMAT:
        raise ConfigError(f"not a {CAPTURE_FORMAT} file", source=source)
    if data.get("version") != CAPTURE_VERSION:
        raise ConfigError(f"capture version {data.get('version')!r} is not {CAPTURE_VERSION}", source=source)
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ConfigError("the capture has no frames", source=source)
    parsed = []
    for n, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("time"), int | float):
            raise ConfigError(f"frame {n} needs a numeric 'time'", source=source)
        calls: dict[tuple[str, str], dict[str, Any]] = {}
        for m, call in enumerate(frame.get("calls", [])):
            if not isinstance(call, dict) or not isinstance(call.get("method"), str):
                raise ConfigError(f"frame {n} call {m} needs a 'method'", source=source)
            if "result" not in call and not isinstance(call.get("error"), dict):
                raise ConfigError(f"frame {n} call {m} needs a 'result' or an 'error'", source=source)
            calls[(call["method"], canonical(call.get("kwargs")))] = call
        parsed.append((float(frame["time"]), calls))
    return parsed


# -- recording ---------------------------------------------------------------------------------


class RecordingSource:
    """Wraps a live source and writes every call and answer to a capture file.

    The file is rewritten (atomically) after every session, so whatever was
    seen is on disk even if the app is killed.
    """

    def __init__(self, inner: Source, path: str | Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.live = inner.live
        self.path = Path(path)
        self._lock = threading.Lock()
        self._frames: list[dict[str, Any]] = []

    @contextmanager
    def session(self, *, poll: bool = False) -> Iterator[Session]:
        calls: list[dict[str, Any]] = []
        started = self.inner.now()
        try:
            with self.inner.session(poll=poll) as inner:
                started = self.inner.now()  # a replayed inner source moves to its next frame on entry
                yield _RecordingSession(inner, calls)
        finally:
            with self._lock:
                if poll or not self._frames:
                    self._frames.append({"time": started, "calls": calls})
                else:
                    # calls outside a poll (a task detail, an action) belong to the frame on screen
                    self._frames[-1]["calls"].extend(calls)
                self._write()

    def _write(self) -> None:
        doc = {
            "format": CAPTURE_FORMAT,
            "version": CAPTURE_VERSION,
            "router": self.inner.name,
            "frames": self._frames,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc, default=str))
        tmp.replace(self.path)

    def now(self) -> float:
        return self.inner.now()

    def close(self) -> None:
        self.inner.close()


class _RecordingSession:
    def __init__(self, inner: Session, calls: list[dict[str, Any]]) -> None:
        self._inner = inner
        self._calls = calls

    def call(self, method: str, kwargs: dict[str, Any] | None = None) -> Any:
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"method": method, "kwargs": dict(kwargs or {})}
        try:
            result = self._inner.call(method, kwargs)
        except FederationError as e:
            entry["error"] = e.to_wire()
            raise
        else:
            entry["result"] = result
            return result
        finally:
            entry["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 3)
            self._calls.append(entry)


def open_source(
    router: str | None,
    *,
    replay: str | None = None,
    record: str | None = None,
    timeout: float = 3.0,
    curve: Any = None,
) -> Source:
    """The source ``fedctl tui`` asks for: a replayed capture, or the router (optionally recorded)."""
    if replay:
        if record:
            raise ConfigError("--replay and --record cannot be used together")
        return ReplaySource(replay)
    if not router:
        raise ConfigError("--router is required (e.g. tcp://127.0.0.1:5555)")
    source: Source = RouterSource(router, timeout=timeout, curve=curve)
    if record:
        source = RecordingSource(source, record)
    return source


__all__ = [
    "ACTION_METHODS",
    "NotRecorded",
    "RecordingSource",
    "ReplaySource",
    "RouterSource",
    "Session",
    "Source",
    "canonical",
    "open_source",
]
