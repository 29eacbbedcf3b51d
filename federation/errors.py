"""One exception root for the whole project, with the families of STYLE.md.

Every error that can cross the wire carries a stable ``code`` string; the
envelope (``federation.wire``) transports ``{"code", "message"}`` and the
client turns it back into the matching class with :func:`error_from_wire`.
"""

from __future__ import annotations


class FederationError(Exception):
    """Root of every error raised by luigi-federation."""

    code = "internal"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class ProtocolError(FederationError):
    """A request or reply that does not follow the envelope (bad frames, bad msgpack, bad fields)."""

    code = "bad_request"


class UnknownMethodError(ProtocolError):
    code = "unknown_method"


class BadArgumentsError(ProtocolError):
    """Arguments that do not fit the method's signature or types."""

    code = "bad_arguments"


class TransportError(FederationError):
    """The other side could not be reached or did not answer in time."""

    code = "unavailable"


class RequestTimeout(TransportError):
    code = "timeout"


class StorageError(FederationError):
    """The store could not read or commit; nothing was acknowledged."""

    code = "storage"


class ShardLockedError(StorageError):
    """Another live process already owns this shard's store."""

    code = "shard_locked"


class ConfigError(FederationError):
    """A configuration problem; the message names the file and the key."""

    code = "config"

    def __init__(self, problems: list[str] | str, *, source: str = "") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("; ".join(prefix + p for p in self.problems))


class Unauthenticated(FederationError):
    """No credentials, or credentials nobody knows (HTTP 401)."""

    code = "unauthenticated"


class AccessDenied(FederationError):
    """A known principal asked for something its role or namespaces do not allow (HTTP 403)."""

    code = "forbidden"


class RemoteError(FederationError):
    """An error reported by a server whose code has no more specific class here."""


_BY_CODE: dict[str, type[FederationError]] = {
    cls.code: cls
    for cls in (
        ProtocolError,
        UnknownMethodError,
        BadArgumentsError,
        TransportError,
        RequestTimeout,
        StorageError,
        ShardLockedError,
        Unauthenticated,
        AccessDenied,
    )
}


# codes of the ProtocolError family raised with their own code (a request the server refused
# as it came: too many frames, undecodable, over the size limit)
_BY_CODE.update(dict.fromkeys(("bad_frames", "bad_msgpack", "too_large"), ProtocolError))


def error_from_wire(err: object) -> FederationError:
    """Rebuild an exception from an envelope's error map (never raises on junk)."""
    if not isinstance(err, dict):
        return RemoteError(f"malformed error reply: {err!r}", code="bad_reply")
    code = str(err.get("code", "internal"))
    message = str(err.get("message", ""))
    cls = _BY_CODE.get(code, RemoteError)
    return cls(message, code=code)
