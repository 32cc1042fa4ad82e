"""SIP transports: UDP, TCP, TLS and WebSocket behind one small interface (RFC 3261 §18).

Everything above this module (transactions, dialogs, the PBX) sees a message plus a
:class:`Source` and never a socket. That matters for two rules that are easy to get wrong:

* a response to a request that came over a connection goes back over *that* connection
  (RFC 3261 §18.2.2, and the only thing that works for phones behind NAT or for browsers on
  WebSocket), so the :class:`Source` carries the connection;
* a request's top Via is stamped with ``received``/``rport`` before anybody looks at it
  (RFC 3261 §18.2.1, RFC 3581), so the transaction layer can route responses blindly.

Bytes from the network never raise out of a protocol callback: malformed datagrams are
answered ``400`` when enough of them survives to address a response and dropped otherwise;
a stream that loses framing is closed. Sends are synchronous and never block: UDP is a
``sendto``, streams write into the connection's buffer (a peer that stops reading gets
disconnected instead of making us buffer without bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Final, TypeAlias

from pomelo.sip.errors import SipError, SipFramingError, SipParseError
from pomelo.sip.framing import KEEPALIVE_PING, StreamFramer
from pomelo.sip.message import (
    MAX_MESSAGE_SIZE,
    SipRequest,
    SipResponse,
    Via,
    header_key,
    parse_message,
    parse_via_list,
)
from pomelo.sip.uri import SipUri, Uri

__all__ = [
    "DEFAULT_PORTS",
    "Address",
    "Connection",
    "MessageHandler",
    "Source",
    "StreamConnection",
    "StreamTransport",
    "Target",
    "TcpTransport",
    "TlsTransport",
    "Transport",
    "TransportError",
    "TransportLayer",
    "UdpTransport",
    "WsTransport",
    "WssTransport",
    "bad_request_reply",
    "send_response",
]

log = logging.getLogger(__name__)

Address: TypeAlias = tuple[str, int]
SipMessage: TypeAlias = SipRequest | SipResponse
MessageHandler: TypeAlias = Callable[[SipMessage, "Source"], None]
ConnectionListener: TypeAlias = Callable[["Connection"], None]

DEFAULT_PORTS: Final[dict[str, int]] = {"UDP": 5060, "TCP": 5060, "TLS": 5061, "WS": 80, "WSS": 443}
UDP_SIZE_LIMIT: Final = 1300
"""RFC 3261 §18.1.1: a request this large must not go over UDP when TCP is available."""
_WRITE_LIMIT: Final = 1024 * 1024
_REASON_LIMIT: Final = 120


class TransportError(SipError):
    """A message could not be handed to the network (no route, refused, closed, overrun).

    The transaction layer turns it into a synthetic 503 for its user (RFC 3261 §8.1.3.1).
    """


class Source:
    """Where an inbound message came from, enough to answer it the way §18.2.2 wants.

    ``connection`` is set for stream transports so responses reuse the inbound connection.
    """

    __slots__ = ("connection", "local", "remote", "transport")

    def __init__(
        self,
        transport: Transport,
        remote: Address,
        local: Address,
        connection: Connection | None = None,
    ) -> None:
        self.transport = transport
        self.remote = remote
        self.local = local
        self.connection = connection

    def __repr__(self) -> str:
        return f"<Source {self.transport.name} {self.remote[0]}:{self.remote[1]}>"


class Target:
    """Where an outbound request goes: chosen once, reused by every retransmission."""

    __slots__ = ("address", "connection", "transport")

    def __init__(
        self, transport: Transport, address: Address, connection: Connection | None = None
    ) -> None:
        self.transport = transport
        self.address = address
        self.connection = connection

    def send(self, data: bytes) -> None:
        """Hand bytes to the network; raises :class:`TransportError` when that is impossible."""
        connection = self.connection
        if connection is not None and not connection.closed:
            connection.send(data)
        else:
            self.transport.send(data, self.address)

    def __repr__(self) -> str:
        return f"<Target {self.transport.name} {self.address[0]}:{self.address[1]}>"


class Connection(ABC):
    """One stream flow (TCP, TLS or WebSocket) to a peer."""

    __slots__ = ()

    transport: Transport
    remote: Address
    local: Address

    @property
    @abstractmethod
    def closed(self) -> bool: ...

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Queue one framed message; raises :class:`TransportError` if the flow is gone."""

    @abstractmethod
    def close(self) -> None: ...


class Transport(ABC):
    """One listening socket (or server) of one kind.

    ``on_message`` is called synchronously from the event loop for every parsed message;
    it must not block and should not raise (exceptions are logged and swallowed so a bug in
    an upper layer cannot take the socket down).
    """

    name: ClassVar[str]
    reliable: ClassVar[bool]
    secure: ClassVar[bool] = False

    def __init__(
        self,
        host: str,
        port: int,
        *,
        advertised_host: str | None = None,
        on_message: MessageHandler | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.advertised_host = advertised_host
        self.on_message = on_message
        self.on_connection_lost: ConnectionListener | None = None
        self.local_address: Address = (host, port)

    @property
    def sent_by(self) -> Address:
        """Host and port to write in our Via and Contact headers."""
        host = self.advertised_host or self.local_address[0]
        if host in ("0.0.0.0", "::"):  # noqa: S104 - detecting a wildcard bind, not binding
            host = self.advertised_host = _guess_local_ip()
        return host, self.local_address[1]

    @abstractmethod
    async def start(self) -> None:
        """Bind and listen; ``local_address`` holds the real port afterwards."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def send(self, data: bytes, address: Address) -> None:
        """Send a message to ``address``; never blocks.

        Stream transports reuse a connection to ``address`` when one exists and otherwise
        open one in the background (errors are logged; use :meth:`connect` to see them).
        """

    async def connect(self, address: Address, server_name: str | None = None) -> Connection | None:
        """Return a connection to ``address`` for stream transports, ``None`` for datagrams."""
        return None

    def _dispatch(self, data: bytes, source: Source, *, stream: bool) -> None:
        """Parse, stamp and deliver one message; answer garbage with 400 when possible."""
        try:
            message = parse_message(data, require_content_length=stream)
        except SipParseError as exc:
            self._reject(data, exc.reason, source)
            return
        except Exception:  # the parser promises SipParseError only; defend the socket anyway
            log.exception("parser failure on %d bytes from %s", len(data), source.remote)
            return
        if type(message) is SipRequest:
            message.vias[0].stamp_source(source.remote[0], source.remote[1])
        handler = self.on_message
        if handler is None:
            return
        try:
            handler(message, source)
        except Exception:
            log.exception("SIP message handler failed for %r", message)

    def _reject(self, data: bytes, reason: str, source: Source) -> None:
        reply = bad_request_reply(data, reason, source.remote)
        if reply is None:
            log.debug("dropped unparseable message from %s: %s", source.remote, reason)
            return
        payload, via = reply
        log.debug("answering 400 to %s: %s", source.remote, reason)
        try:
            send_response(payload, via, source)
        except (TransportError, OSError) as exc:
            log.debug("could not send 400 to %s: %s", source.remote, exc)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.local_address[0]}:{self.local_address[1]}>"


def _guess_local_ip() -> str:
    """The address the OS would use for an outbound route; no packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing lookup only
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


# -- responses ------------------------------------------------------------------------------


def send_response(data: bytes, via: Via, source: Source) -> None:
    """Send a response the way RFC 3261 §18.2.2 (with RFC 3581) routes it.

    Reliable transports answer over the request's connection while it lives, otherwise open
    one to ``received`` and the sent-by port. Datagrams go to ``received``/``rport`` when
    the request carried them (they were stamped on arrival) and to sent-by otherwise.
    """
    transport = source.transport
    default_port = DEFAULT_PORTS.get(transport.name, 5060)
    if transport.reliable:
        connection = source.connection
        if connection is not None and not connection.closed:
            connection.send(data)
            return
        transport.send(data, (via.received or via.host, via.port or default_port))
        return
    transport.send(data, via.response_target(default_port))


def _printable(text: str) -> bool:
    return text.isprintable() and "\r" not in text and "\n" not in text


def bad_request_reply(data: bytes, reason: str, remote: Address) -> tuple[bytes, Via] | None:
    """Build a ``400`` for a request the parser rejected, or ``None`` when it cannot be answered.

    The full parser refused the message, so this reads only the start line and the headers a
    response must echo (§8.2.6.2): Via, From, To, Call-ID and CSeq, copied verbatim when they
    are printable. Without a parseable request line and top Via there is no safe address for
    a response and nothing is sent; responses and ACKs are never answered.
    """
    end = data.find(b"\r\n\r\n")
    head = data[: end if end >= 0 else 8192].lstrip(b"\r\n").decode("utf-8", "replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2].upper() != "SIP/2.0" or parts[0] == "ACK":
        return None
    if not parts[0].isascii() or not parts[0].isalpha():
        return None
    vias: list[str] = []
    echoed: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        value = value.strip()
        if not colon or not _printable(value) or len(value) > 2048:
            continue
        key = header_key(name)
        if key == "via":
            vias.append(value)
        elif key in ("from", "to", "call-id", "cseq") and key not in echoed:
            echoed[key] = value
    if not vias:
        return None
    try:
        top = parse_via_list(vias[0])
    except SipParseError:
        return None
    top[0].stamp_source(remote[0], remote[1])
    phrase = "".join(ch for ch in reason if ch.isprintable())[:_REASON_LIMIT]
    out = [f"SIP/2.0 400 Bad Request ({phrase})"]
    out += [f"Via: {via}" for via in top]
    out += [f"Via: {value}" for value in vias[1:]]
    names = {"from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}
    for key, name in names.items():
        echo = echoed.get(key)
        if echo is None:
            continue
        if key == "to" and ";tag=" not in echo.lower().replace(" ", ""):
            echo += ";tag=" + secrets.token_hex(6)
        out.append(f"{name}: {echo}")
    out.append("Content-Length: 0")
    out.append("\r\n")
    return "\r\n".join(out).encode(), top[0]


# -- UDP ------------------------------------------------------------------------------------


class _UdpProtocol(asyncio.DatagramProtocol):
    __slots__ = ("owner",)

    def __init__(self, owner: UdpTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        owner = self.owner
        if len(data) <= 4 and not data.strip():
            return  # keep-alive padding (CRLF, CRLFCRLF) some phones send over UDP
        remote = (str(addr[0]), int(addr[1]))
        owner._dispatch(data, Source(owner, remote, owner.local_address), stream=False)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors carry no usable context for a transaction; the timers cover them.
        log.debug("UDP error on %s: %s", self.owner, exc)


class UdpTransport(Transport):
    """One datagram is one message (RFC 3261 §18.3); nothing is buffered."""

    name = "UDP"
    reliable = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5060,
        *,
        advertised_host: str | None = None,
        on_message: MessageHandler | None = None,
        receive_buffer: int = 4 * 1024 * 1024,
    ) -> None:
        super().__init__(host, port, advertised_host=advertised_host, on_message=on_message)
        self.receive_buffer = receive_buffer
        self._socket: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
        )
        self._socket = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and self.receive_buffer:
            # A burst of datagrams while the loop is busy must queue in the kernel, not be
            # dropped and cost a 500 ms retransmission; the kernel caps this at rmem_max.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sockname = transport.get_extra_info("sockname")
        self.local_address = (str(sockname[0]), int(sockname[1]))

    async def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def send(self, data: bytes, address: Address) -> None:
        sock = self._socket
        if sock is None or sock.is_closing():
            raise TransportError("UDP transport is closed")
        if len(data) > MAX_MESSAGE_SIZE:
            raise TransportError(f"message of {len(data)} bytes does not fit a datagram")
        sock.sendto(data, address)


# -- TCP / TLS ------------------------------------------------------------------------------


class StreamConnection(Connection, asyncio.Protocol):
    """A TCP or TLS connection: a :class:`StreamFramer` cuts the byte stream into messages.

    RFC 5626 keep-alive pings (CRLFCRLF) are answered with CRLF; lost framing closes the
    connection since there is no way to find the next message; an idle timer closes flows
    nobody uses so a crowd of silent peers cannot pin file descriptors forever.
    """

    __slots__ = (
        "_alias",
        "_framer",
        "_idle_handle",
        "_last_activity",
        "_socket",
        "_source",
        "local",
        "owner",
        "remote",
        "transport",
    )

    def __init__(self, owner: StreamTransport) -> None:
        self.owner = owner
        self.transport = owner
        self._framer = StreamFramer()
        self._socket: asyncio.Transport | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self.remote: Address = ("", 0)
        self.local: Address = ("", 0)
        self._source: Source | None = None
        self._alias: Address | None = None

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._socket = transport
        peer = transport.get_extra_info("peername")
        sockname = transport.get_extra_info("sockname")
        self.remote = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        self.local = (str(sockname[0]), int(sockname[1])) if sockname else ("", 0)
        self._source = Source(self.owner, self.remote, self.local, self)
        if not self.owner._register(self):
            transport.abort()
            return
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        self._idle_handle = loop.call_later(self.owner.idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._last_activity = asyncio.get_running_loop().time()
        try:
            frames = self._framer.feed(data)
        except SipFramingError as exc:
            log.info("closing %s connection from %s: %s", self.owner.name, self.remote, exc)
            self.close()
            return
        source = self._source
        assert source is not None
        for frame in frames:
            if frame == KEEPALIVE_PING:
                self._write(b"\r\n")
            else:
                self.owner._dispatch(frame, source, stream=True)
            if self._socket is None:
                return

    def eof_received(self) -> bool | None:
        return None  # close our side too; SIP has no use for half-open streams

    def connection_lost(self, exc: Exception | None) -> None:
        self._socket = None
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self.owner._unregister(self)

    # Connection ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._socket is None or self._socket.is_closing()

    def send(self, data: bytes) -> None:
        if self.closed:
            raise TransportError(f"{self.owner.name} connection to {self.remote} is closed")
        if not self._write(data):
            raise TransportError(f"write buffer overrun towards {self.remote}")

    def _write(self, data: bytes) -> bool:
        """Write without raising (it also runs inside protocol callbacks); False = overrun."""
        sock = self._socket
        if sock is None:
            return False
        sock.write(data)
        if sock.get_write_buffer_size() > _WRITE_LIMIT:
            log.warning("%s peer %s is not reading; disconnecting", self.owner.name, self.remote)
            sock.abort()
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()

    def _check_idle(self) -> None:
        self._idle_handle = None
        if self._socket is None:
            return
        loop = asyncio.get_running_loop()
        idle_for = loop.time() - self._last_activity
        remaining = self.owner.idle_timeout - idle_for
        if remaining <= 0:
            log.debug("closing idle %s connection %s", self.owner.name, self.remote)
            self.close()
        else:
            self._idle_handle = loop.call_later(remaining, self._check_idle)

    def __repr__(self) -> str:
        return f"<StreamConnection {self.owner.name} {self.remote[0]}:{self.remote[1]}>"


class StreamTransport(Transport):
    """Shared TCP/TLS logic: a listening server plus a table of live connections.

    Connections are indexed by the peer's address so a request towards a peer that already
    has a flow with us (typically a phone that registered over TCP) reuses it (RFC 5923 in
    spirit; RFC 3261 §18.1.1 allows it). The table is bounded by ``max_connections``.
    """

    reliable = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5060,
        *,
        advertised_host: str | None = None,
        on_message: MessageHandler | None = None,
        idle_timeout: float = 600.0,
        max_connections: int = 10_000,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(host, port, advertised_host=advertised_host, on_message=on_message)
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.connections: dict[Address, StreamConnection] = {}
        self._server: asyncio.Server | None = None
        self._connecting: dict[Address, asyncio.Future[StreamConnection]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False

    def _server_ssl(self) -> ssl.SSLContext | None:
        return None

    def _client_ssl(self) -> ssl.SSLContext | None:
        return None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: StreamConnection(self),
            self.host,
            self.port,
            ssl=self._server_ssl(),
            reuse_address=True,
        )
        sockname = self._server.sockets[0].getsockname()
        self.local_address = (str(sockname[0]), int(sockname[1]))

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections.values()):
            connection.close()
        for task in list(self._background):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def _register(self, connection: StreamConnection) -> bool:
        if len(self.connections) >= self.max_connections:
            log.warning("%s connection limit %d reached", self.name, self.max_connections)
            return False
        self.connections[connection.remote] = connection
        return True

    def _unregister(self, connection: StreamConnection) -> None:
        for key in (connection.remote, connection._alias):
            if key is not None and self.connections.get(key) is connection:
                del self.connections[key]
        listener = self.on_connection_lost
        if listener is not None:
            try:
                listener(connection)
            except Exception:
                log.exception("connection-lost listener failed")

    async def connect(self, address: Address, server_name: str | None = None) -> StreamConnection:
        existing = self.connections.get(address)
        if existing is not None and not existing.closed:
            return existing
        if self._closed:
            raise TransportError(f"{self.name} transport is closed")
        pending = self._connecting.get(address)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StreamConnection] = loop.create_future()
        future.add_done_callback(_consume_exception)
        self._connecting[address] = future
        client_ssl = self._client_ssl()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: StreamConnection(self),
                    address[0],
                    address[1],
                    ssl=client_ssl,
                    server_hostname=(server_name or address[0]) if client_ssl else None,
                ),
                self.connect_timeout,
            )
            if protocol.closed:
                raise TransportError(f"{self.name} connection to {address} was refused locally")
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            error = TransportError(f"cannot connect {self.name} to {address}: {exc}")
            future.set_exception(error)
            raise error from exc
        except BaseException as exc:
            future.set_exception(TransportError(f"connect to {address} aborted"))
            raise exc
        finally:
            self._connecting.pop(address, None)
        # The peer knows us by our sockname; requests it sends back to our listening port
        # arrive on a separate connection, so index the outbound flow by where we dialled.
        if protocol.remote != address:
            protocol._alias = address
            self.connections[address] = protocol
        future.set_result(protocol)
        return protocol

    def send(self, data: bytes, address: Address) -> None:
        connection = self.connections.get(address)
        if connection is not None and not connection.closed:
            connection.send(data)
            return
        if self._closed:
            raise TransportError(f"{self.name} transport is closed")
        task = asyncio.get_running_loop().create_task(self._connect_and_send(data, address))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _connect_and_send(self, data: bytes, address: Address) -> None:
        try:
            connection = await self.connect(address)
            connection.send(data)
        except TransportError as exc:
            log.info("%s send to %s failed: %s", self.name, address, exc)


def _consume_exception(future: asyncio.Future[StreamConnection]) -> None:
    if not future.cancelled():
        future.exception()


class TcpTransport(StreamTransport):
    name = "TCP"


class TlsTransport(StreamTransport):
    """TLS over TCP; ``server_context`` is required, ``client_context`` defaults to verifying."""

    name = "TLS"
    secure = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5061,
        *,
        server_context: ssl.SSLContext,
        client_context: ssl.SSLContext | None = None,
        advertised_host: str | None = None,
        on_message: MessageHandler | None = None,
        idle_timeout: float = 600.0,
        max_connections: int = 10_000,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            host,
            port,
            advertised_host=advertised_host,
            on_message=on_message,
            idle_timeout=idle_timeout,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
        )
        self.server_context = server_context
        self.client_context = client_context or ssl.create_default_context()

    def _server_ssl(self) -> ssl.SSLContext | None:
        return self.server_context

    def _client_ssl(self) -> ssl.SSLContext | None:
        return self.client_context


# -- WebSocket (RFC 7118) -------------------------------------------------------------------


class _WsConnection(Connection):
    """A WebSocket flow; outbound frames go through a bounded queue and one writer task.

    ``websockets`` sends with a coroutine while the transaction layer sends synchronously;
    the queue keeps frames in order and bounds what a slow browser can make us hold.
    """

    __slots__ = ("_queue", "_writer", "_ws", "local", "remote", "source", "transport")

    def __init__(self, transport: WsTransport, ws: object, remote: Address, local: Address) -> None:
        self.transport = transport
        self._ws = ws
        self.remote = remote
        self.local = local
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
        self._writer: asyncio.Task[None] | None = None
        self.source = Source(transport, remote, local, self)

    @property
    def closed(self) -> bool:
        return self._writer is None or self._writer.done()

    def send(self, data: bytes) -> None:
        if self.closed:
            raise TransportError(f"WebSocket to {self.remote} is closed")
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.close()
            raise TransportError(f"WebSocket peer {self.remote} is not reading") from None

    def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()


class WsTransport(Transport):
    """SIP over WebSocket (RFC 7118) on the ``websockets`` library's server.

    The handshake must select subprotocol ``sip``; each text or binary WebSocket message
    carries exactly one SIP message. We only accept connections (browsers dial us), so
    outbound requests reach a browser over the flow it opened.
    """

    name = "WS"
    reliable = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8088,
        *,
        ssl_context: ssl.SSLContext | None = None,
        advertised_host: str | None = None,
        on_message: MessageHandler | None = None,
        max_connections: int = 10_000,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__(host, port, advertised_host=advertised_host, on_message=on_message)
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_message_size = max_message_size
        self.connections: dict[Address, _WsConnection] = {}
        self._server: object | None = None

    async def start(self) -> None:
        from websockets.asyncio.server import serve

        server = await serve(
            self._handle,
            self.host,
            self.port,
            subprotocols=["sip"],  # type: ignore[list-item]
            compression=None,
            max_size=self.max_message_size,
            ssl=self.ssl_context,
        )
        self._server = server
        sockname = next(iter(server.sockets)).getsockname()
        self.local_address = (str(sockname[0]), int(sockname[1]))

    async def close(self) -> None:
        from websockets.asyncio.server import Server

        server = self._server
        if isinstance(server, Server):
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._server = None

    def send(self, data: bytes, address: Address) -> None:
        connection = self.connections.get(address)
        if connection is None or connection.closed:
            raise TransportError(f"no {self.name} connection to {address}")
        connection.send(data)

    async def _handle(self, ws: object) -> None:
        from websockets.asyncio.server import ServerConnection
        from websockets.exceptions import ConnectionClosed

        assert isinstance(ws, ServerConnection)
        if ws.subprotocol != "sip":
            await ws.close(1002, "SIP subprotocol required")
            return
        if len(self.connections) >= self.max_connections:
            await ws.close(1013, "too many connections")
            return
        remote = (str(ws.remote_address[0]), int(ws.remote_address[1]))
        local = (str(ws.local_address[0]), int(ws.local_address[1]))
        connection = _WsConnection(self, ws, remote, local)
        connection._writer = asyncio.get_running_loop().create_task(self._write_loop(connection))
        self.connections[remote] = connection
        try:
            async for frame in ws:
                data = frame.encode() if isinstance(frame, str) else bytes(frame)
                if not data.strip():
                    if data == KEEPALIVE_PING:
                        connection.send(b"\r\n")
                    continue
                self._dispatch(data, connection.source, stream=False)
        except ConnectionClosed:
            pass
        finally:
            if self.connections.get(remote) is connection:
                del self.connections[remote]
            connection.close()
            listener = self.on_connection_lost
            if listener is not None:
                try:
                    listener(connection)
                except Exception:
                    log.exception("connection-lost listener failed")

    async def _write_loop(self, connection: _WsConnection) -> None:
        from websockets.asyncio.server import ServerConnection
        from websockets.exceptions import ConnectionClosed

        ws = connection._ws
        assert isinstance(ws, ServerConnection)
        try:
            while True:
                data = await connection._queue.get()
                if data is None:
                    return
                await ws.send(data, text=True)
        except ConnectionClosed:
            return
        except asyncio.CancelledError:
            await ws.close()
            raise


class WssTransport(WsTransport):
    """WebSocket over TLS; identical framing, reported as ``WSS`` in Via."""

    name = "WSS"
    secure = True


# -- the layer ------------------------------------------------------------------------------


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class TransportLayer:
    """The set of transports of one endpoint and the choice among them for a request.

    Choosing follows RFC 3263 without DNS SRV/NAPTR (the standard library cannot query
    them): an explicit ``transport`` URI parameter wins (compared case-insensitively, as
    peers write ``transport=UDP``), ``sips`` means TLS, and otherwise UDP, switching to TCP
    for requests too large for a datagram (§18.1.1). Host names go through the loop's
    resolver so the event loop never blocks.
    """

    def __init__(self, on_message: MessageHandler | None = None) -> None:
        self.transports: dict[str, Transport] = {}
        self._on_message = on_message
        self._on_connection_lost: ConnectionListener | None = None

    def set_handlers(
        self, on_message: MessageHandler, on_connection_lost: ConnectionListener | None = None
    ) -> None:
        self._on_message = on_message
        self._on_connection_lost = on_connection_lost
        for transport in self.transports.values():
            transport.on_message = on_message
            transport.on_connection_lost = on_connection_lost

    async def add(self, transport: Transport) -> Transport:
        """Start ``transport`` and make it available; one transport per kind."""
        if transport.name in self.transports:
            raise ValueError(f"a {transport.name} transport is already registered")
        transport.on_message = self._on_message
        transport.on_connection_lost = self._on_connection_lost
        await transport.start()
        self.transports[transport.name] = transport
        return transport

    def get(self, name: str) -> Transport | None:
        return self.transports.get(name.upper())

    async def close(self) -> None:
        for transport in list(self.transports.values()):
            await transport.close()
        self.transports.clear()

    def choose(self, uri: Uri, size: int = 0) -> tuple[Transport, str, int]:
        """Pick the transport, host and port for a next-hop URI (no name resolution)."""
        if not isinstance(uri, SipUri):
            raise TransportError(f"cannot route to a {uri.scheme} URI")
        requested = uri.transport  # already lower-case
        if requested is not None:
            name = requested.upper()
            if uri.secure and name in ("TCP", "TLS"):
                name = "TLS"
            elif uri.secure and name == "WS":
                name = "WSS"
        elif uri.secure:
            name = "TLS"
        else:
            name = "UDP"
            if size > UDP_SIZE_LIMIT and "TCP" in self.transports:
                name = "TCP"
        transport = self.transports.get(name)
        if transport is None:
            raise TransportError(f"no {name} transport for {uri}")
        host = uri.params.get("maddr") or uri.host
        port = uri.port or DEFAULT_PORTS.get(name, 5060)
        return transport, host, port

    async def resolve(self, request: SipRequest) -> Target:
        """Next hop for a request: its first Route (§8.1.2) or else its Request-URI."""
        next_hop = request.routes[0].uri if request.routes else request.uri
        transport, host, port = self.choose(next_hop, len(request.body) + 600)
        address = (host, port)
        if not _is_ip(host):
            address = await self._lookup(host, port, transport.reliable)
        connection = await transport.connect(address, server_name=host)
        return Target(transport, address, connection)

    @staticmethod
    async def _lookup(host: str, port: int, reliable: bool) -> Address:
        loop = asyncio.get_running_loop()
        kind = socket.SOCK_STREAM if reliable else socket.SOCK_DGRAM
        try:
            infos = await loop.getaddrinfo(host, port, type=kind)
        except OSError as exc:
            raise TransportError(f"cannot resolve {host}: {exc}") from exc
        if not infos:
            raise TransportError(f"no address for {host}")
        sockaddr = infos[0][4]
        return str(sockaddr[0]), int(sockaddr[1])
