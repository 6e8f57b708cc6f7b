"""The events the parsers hand out, and the one error they raise.

Events are slotted dataclasses, not frozen ones and not NamedTuples: one Request and one
Response are built per request on the proxy's hot path. A frozen 11-field dataclass costs
~1.0 µs to build (one ``object.__setattr__`` per field), a NamedTuple ~0.26 µs, a slotted
class ~0.18 µs, and its fields read faster. Each writes its ``__init__`` out (``init=False``):
mypyc compiles a written constructor to C, while the one @dataclass generates stays an
interpreted function even in the compiled core (proxy/compiled); @dataclass still gives
``__eq__``, ``__repr__`` and ``replace``. Nothing changes an event after the parser made it:
treat them as immutable (see docs/http1.md).
"""

from __future__ import annotations

from dataclasses import dataclass

Headers = list[tuple[bytes, bytes]]
Names = list[bytes]


def lower_names(headers: Headers) -> Names:
    """The field names of ``headers`` in lower case, in order. The parsers hand this out
    with every head, so nothing per request lowers a name again: lookups and filters are
    ``in``, ``index`` and set operations on this list."""
    return [name.lower() for name, _ in headers]


def _get(headers: Headers, names: Names, name_lower: bytes) -> bytes | None:
    """The first value of header ``name_lower`` (give the name in lower case)."""
    if name_lower in names:
        return headers[names.index(name_lower)][1]
    return None


def _get_all(headers: Headers, names: Names, name_lower: bytes) -> list[bytes]:
    """Every value of header ``name_lower``, in order received."""
    if name_lower not in names:
        return []
    return [f[1] for f, name in zip(headers, names, strict=True) if name == name_lower]


@dataclass(slots=True, init=False)
class Request:
    """A request head. Body framing is already decided: the proxy re-frames it itself."""

    method: bytes
    target: bytes
    version: bytes  # b"1.1" or b"1.0"
    headers: Headers  # names as received, values without surrounding whitespace
    content_length: int | None
    chunked: bool
    keep_alive: bool
    upgrade: bytes | None  # the Upgrade value, only when Connection lists "upgrade"
    expect_continue: bool
    host: bytes | None
    # The header names in lower case, parallel to ``headers`` (the parser sets it; None in
    # a Request built by hand: the helpers then lower the names themselves).
    names: Names | None = None

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: Headers,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        upgrade: bytes | None,
        expect_continue: bool,
        host: bytes | None,
        names: Names | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.expect_continue = expect_continue
        self.host = host
        self.names = names

    def get(self, name_lower: bytes) -> bytes | None:
        return _get(self.headers, self.lowered(), name_lower)  # the helpers' docstrings

    def get_all(self, name_lower: bytes) -> list[bytes]:
        return _get_all(self.headers, self.lowered(), name_lower)

    def lowered(self) -> Names:
        """``names``, computed when the head was built by hand (``names`` None)."""
        names = self.names
        return names if names is not None else lower_names(self.headers)


@dataclass(slots=True, init=False)
class Response:
    """A response head. ``informational`` is a 1xx other than 101: a final one follows."""

    status: int
    reason: bytes
    version: bytes
    headers: Headers
    content_length: int | None
    chunked: bool
    keep_alive: bool
    informational: bool
    names: Names | None = None  # as Request.names

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: bytes,
        headers: Headers,
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        informational: bool,
        names: Names | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.informational = informational
        self.names = names

    def get(self, name_lower: bytes) -> bytes | None:
        return _get(self.headers, self.lowered(), name_lower)  # the helpers' docstrings

    def get_all(self, name_lower: bytes) -> list[bytes]:
        return _get_all(self.headers, self.lowered(), name_lower)

    def lowered(self) -> Names:
        """``names``, computed when the head was built by hand (``names`` None)."""
        names = self.names
        return names if names is not None else lower_names(self.headers)


@dataclass(slots=True, init=False)
class Data:
    """A piece of body, de-chunked. Pieces follow the bytes fed: never buffered whole."""

    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(slots=True, init=False)
class EndOfMessage:
    """The body is complete. ``trailers`` only ever come with a chunked body."""

    trailers: Headers

    def __init__(self, trailers: Headers | None = None) -> None:
        self.trailers = trailers if trailers is not None else []


Event = Request | Response | Data | EndOfMessage


class ProtocolError(Exception):
    """The peer broke HTTP/1.1 framing. The parser is dead; answer ``status`` and close.

    ``status`` is 400 / 414 / 431 / 501 / 505 from a RequestParser (the status to answer the
    client with) and 502 from a ResponseParser (the status the proxy answers downstream).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class UpstreamClosed(ProtocolError):
    """The upstream closed the connection before any byte of the response it owed: a reset
    (Envoy's UC, 503), not a malformed response (UPE, 502)."""
