"""TLS over a plain asyncio transport, as the proxy needs it: one object per connection that
is the TCP transport's protocol and the Channel's transport.

Why not the event loop's own TLS (`create_connection(ssl=...)`): counted with callgrind
(bench.instructions, docs/performance.md), uvloop's SSLProtocol spent about 8,500
instructions per request and hop outside OpenSSL's SSL_read and SSL_write (its buffered
read loop, its write backlog, flow-control bookkeeping and a state machine for every
case a general library must serve), as much as the proxy's own HTTP work. The proxy needs
less: each read is decrypted at once and handed to the Channel (which buffers and applies
its own back-pressure), each write is encrypted and written at once (the TCP transport
buffers and tells when to pause).

What it does, as asyncio's sslproto does it:
- the handshake (client or server side, SNI, client certificates: the SSLContext's), with
  a timeout; `connected` resolves when it is done, with the handshake's error otherwise;
- application data both ways, with TLS 1.3's post-handshake messages (session tickets,
  key updates) handled by OpenSSL through the memory BIOs;
- close: a close_notify is sent, then the TCP connection closed; a close_notify from the
  peer is the end of its data (`eof_received`), and a TCP EOF without one is too (as
  asyncio reports it);
- a fatal TLS error aborts the connection and the Channel gets it in `connection_lost`;
- `get_extra_info`: "sslcontext", "ssl_object", "peercert", "cipher", "compression", and
  the socket's (peername, sockname, socket) from the TCP transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from typing import TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    from proxy.transport.streams import Channel

# MESH_OWN_TLS=0 in a proxy's environment: the event loop's TLS instead (to compare the
# two on the same build, as docs/performance.md does).
ENABLED: Final = os.environ.get("MESH_OWN_TLS", "1") != "0"

# A read asks OpenSSL for at most this much plaintext (one TLS record holds at most 16 KiB;
# a TCP read may carry several).
READ_SIZE: Final = 65536

HANDSHAKE: Final = 0
OPEN: Final = 1
CLOSED: Final = 2


class TLSTransport:
    """The TCP transport's protocol and the Channel's transport (see the module
    docstring); `connected` resolves after the handshake. Neither asyncio.Protocol nor
    asyncio.Transport by class, both by its methods: the compiled core lays it out as a
    native class, which a base with slots of its own (asyncio.BaseTransport's) would not
    allow."""

    def __init__(
        self,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None,
        app: Channel,
        handshake_timeout: float,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self._context = context
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        try:
            self._ssl = context.wrap_bio(
                self._incoming,
                self._outgoing,
                server_side=server_side,
                server_hostname=server_hostname,
                session=session,
            )
        except ValueError:  # a session of another context (renewed since): a full handshake
            self._ssl = context.wrap_bio(
                self._incoming,
                self._outgoing,
                server_side=server_side,
                server_hostname=server_hostname,
            )
        # The C object under ssl.SSLObject: its read/write/pending are C methods, where
        # SSLObject's are Python functions around them (one more frame per call).
        self._raw: Any = getattr(self._ssl, "_sslobj", self._ssl)
        self._app = app
        self._tcp: asyncio.Transport | None = None
        self._state = HANDSHAKE
        self._closing = False
        self._error: BaseException | None = None
        self._timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = loop.create_future()

    # -- the TCP transport's protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._timed_out)
        self._handshake()

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        state = self._state
        if state == OPEN:
            self._read()
        elif state == HANDSHAKE:
            self._handshake()

    def eof_received(self) -> bool:
        if self._state == HANDSHAKE:
            self._fail(ConnectionResetError("connection closed during the TLS handshake"))
            return False
        if self._state == OPEN:
            self._state = CLOSED
            self._app.eof_received()
        return False  # the TCP transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        was = self._state
        self._state = CLOSED
        if was == HANDSHAKE:
            self._handshake_failed(
                exc or ConnectionResetError("connection closed during the TLS handshake")
            )
            return
        error = self._error if self._error is not None else exc
        self._app.connection_lost(error)  # type: ignore[arg-type]

    def pause_writing(self) -> None:
        self._app.pause_writing()

    def resume_writing(self) -> None:
        self._app.resume_writing()

    # -- handshake -----------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except Exception as exc:  # ssl.SSLError, a certificate refused, a callback's error
            self._flush()
            self._fail(exc)
            return
        self._flush()
        self._cancel_timer()
        self._state = OPEN
        self._app.connection_made(cast(asyncio.Transport, self))
        if not self.connected.done():
            self.connected.set_result(None)
        if self._incoming.pending:  # application data right behind the handshake
            self._read()

    def _timed_out(self) -> None:
        self._timer = None
        if self._state == HANDSHAKE:
            self._fail(TimeoutError("TLS handshake timed out"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handshake_failed(self, exc: BaseException) -> None:
        if not self.connected.done():
            self.connected.set_exception(exc)

    def _fail(self, exc: BaseException) -> None:
        """A fatal error: the connection is aborted; who waits or reads gets `exc`."""
        if self._error is None:
            self._error = exc
        if self._state == HANDSHAKE:
            self._cancel_timer()
            self._handshake_failed(exc)
        tcp = self._tcp
        if tcp is not None:
            tcp.abort()

    # -- reading -------------------------------------------------------------------------

    def _read(self) -> None:
        raw, incoming, app = self._raw, self._incoming, self._app
        while True:
            try:
                data = raw.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break  # a record not whole yet, or a post-handshake message only
            except ssl.SSLZeroReturnError:
                self._peer_closed()
                return
            except Exception as exc:  # ssl.SSLError: a bad record, an alert
                self._fail(exc)
                return
            if not data:  # _ssl's read answers b"" for the peer's close_notify
                self._peer_closed()
                return
            app.data_received(data)
            if self._closing or self._state != OPEN:
                return  # closed by the app in its callback
            # A read takes a whole record (READ_SIZE is more than a record holds), so
            # what is left to read is in the incoming buffer or nowhere.
            if not incoming.pending:
                break
        if self._outgoing.pending:  # what OpenSSL answered (a key update)
            self._flush()

    def _peer_closed(self) -> None:
        """The peer's close_notify: the end of its data. Ours answers it (a peer on
        asyncio's TLS waits for it before it closes), then the TCP connection closes."""
        if self._state == OPEN and not self._closing:
            self._app.eof_received()
        self.close()

    def _flush(self) -> None:
        out = self._outgoing
        if out.pending:
            tcp = self._tcp
            data = out.read()
            if tcp is not None and not tcp.is_closing():
                tcp.write(data)

    # -- the Channel's transport -----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != OPEN or self._closing:
            return  # as a closing transport drops writes (the Channel sees connection_lost)
        try:
            n: int = self._raw.write(data)
            while n < len(data):  # a partial write (only with SSL_MODE_ENABLE_PARTIAL_WRITE)
                n += self._raw.write(memoryview(data)[n:])
        except Exception as exc:
            self._fail(exc)
            return
        tcp = self._tcp
        assert tcp is not None
        tcp.write(self._outgoing.read())

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close

    def write_eof(self) -> None:
        raise NotImplementedError("TLS cannot half-close: close() sends close_notify")

    def is_closing(self) -> bool:
        tcp = self._tcp
        return self._closing or self._state == CLOSED or tcp is None or tcp.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        tcp = self._tcp
        if self._state == OPEN:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._ssl.unwrap()  # writes close_notify; the peer's is not waited for
            self._flush()
        if tcp is not None:
            tcp.close()

    def forget_failure(self) -> None:
        """After a failed handshake is raised to the caller: keep no reference to the error.
        Its traceback holds the caller's frames, which hold this object: a cycle that only
        the cycle collector frees, and late (objects that lived through a handshake timeout
        are in its oldest generation). Under a flood of connections that start TLS and
        stall, that was about 40 KiB each kept until a full collection (issue 19, item 6)."""
        self._error = None
        if self.connected.done():
            self.connected = asyncio.get_running_loop().create_future()
            self.connected.cancel()

    def abort(self) -> None:
        self._closing = True
        tcp = self._tcp
        if tcp is not None:
            tcp.abort()

    def pause_reading(self) -> None:
        if self._tcp is not None:
            self._tcp.pause_reading()

    def resume_reading(self) -> None:
        if self._tcp is not None:
            self._tcp.resume_reading()

    def is_reading(self) -> bool:
        return self._tcp is not None and self._tcp.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._tcp is not None:
            self._tcp.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._tcp.get_write_buffer_size() if self._tcp is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sslcontext":
            return self._context
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert()
        if name == "cipher":
            return self._ssl.cipher()
        if name == "compression":
            return self._ssl.compression()
        tcp = self._tcp
        return tcp.get_extra_info(name, default) if tcp is not None else default


async def connect(
    host: str,
    port: int,
    context: ssl.SSLContext,
    server_hostname: str | None,
    app: Channel,
    handshake_timeout: float = 60.0,
    session: ssl.SSLSession | None = None,
) -> None:
    """A TLS client connection to host:port for `app`, after its handshake; resuming
    `session` (a Resumption's) when the server still takes it."""
    loop = asyncio.get_running_loop()
    tls = TLSTransport(context, False, server_hostname, app, handshake_timeout, session)
    await loop.create_connection(lambda: cast(asyncio.Protocol, tls), host, port)
    await _handshaken(tls)


async def accept(
    sock: Any, context: ssl.SSLContext, app: Channel, handshake_timeout: float
) -> None:
    """An accepted socket as a TLS server connection for `app`, after its handshake."""
    loop = asyncio.get_running_loop()
    tls = TLSTransport(context, True, None, app, handshake_timeout)
    await loop.connect_accepted_socket(lambda: cast(asyncio.Protocol, tls), sock)
    await _handshaken(tls)


async def _handshaken(tls: TLSTransport) -> None:
    try:
        await tls.connected
    except BaseException:
        tls.abort()  # a failed handshake, or the caller gave up (a timeout, a cancel)
        tls.forget_failure()
        raise


class Resumption:
    """The TLS session to offer on the next connection to one peer (a client's side): the
    last connection's, once the server has sent it a ticket (TLS 1.3 sends tickets after
    the handshake). A resumed handshake skips the certificate signatures and checks on
    both sides, which is most of a handshake's CPU; the peer's certificate, verified when
    the session began, comes back with it, so identity checks read it as before. One per
    peer and client context: a session of another context is not offered."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: ssl.SSLObject | None = None

    def session(self) -> ssl.SSLSession | None:
        last = self.last
        if last is None:
            return None
        session = last.session
        return session if session is not None and session.has_ticket else None
