"""Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3, RFC 5626 §4.4.1).

On a stream the only delimiter of a body is Content-Length, so the framer reads just enough
of each header section to find it and leaves real parsing to :func:`parse_message`. Every
limit here exists because a peer that never finishes a message must not be able to make us
buffer without bound.
"""

from __future__ import annotations

import re
from typing import Final

from pomelo.sip.errors import SipFramingError

__all__ = ["KEEPALIVE_PING", "MAX_BODY_SIZE", "MAX_HEADER_SIZE", "StreamFramer"]

MAX_HEADER_SIZE: Final = 64 * 1024
MAX_BODY_SIZE: Final = 1024 * 1024

KEEPALIVE_PING: Final = b"\r\n\r\n"
"""Returned by :meth:`StreamFramer.feed` for an RFC 5626 ping; answer it with ``b"\\r\\n"``."""

_CONTENT_LENGTH_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_HEADER_END = b"\r\n\r\n"


class StreamFramer:
    """Incremental framer: feed it whatever the socket returns, get whole messages back.

    It never raises for a well-behaved peer. :class:`SipFramingError` means the stream is
    beyond repair (no Content-Length, oversize sections) and the connection should close.
    """

    __slots__ = ("_buffer", "_scan_from", "max_body_size", "max_header_size")

    def __init__(
        self, *, max_header_size: int = MAX_HEADER_SIZE, max_body_size: int = MAX_BODY_SIZE
    ) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self._buffer = bytearray()
        self._scan_from = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned, e.g. for idle-connection accounting."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every message (or keep-alive ping) now complete."""
        self._buffer += data
        frames: list[bytes] = []
        while True:
            frame = self._next_frame()
            if frame is None:
                return frames
            frames.append(frame)

    def _next_frame(self) -> bytes | None:
        buffer = self._buffer
        ping = self._skip_keepalives()
        if ping is not None:
            return ping
        if not buffer:
            return None
        end = buffer.find(_HEADER_END, self._scan_from)
        if end < 0:
            if len(buffer) > self.max_header_size:
                raise SipFramingError(f"header section exceeds {self.max_header_size} bytes")
            # The terminator may straddle this chunk and the next one.
            self._scan_from = max(0, len(buffer) - 3)
            return None
        if end > self.max_header_size:
            raise SipFramingError(f"header section exceeds {self.max_header_size} bytes")
        total = end + 4 + self._content_length(bytes(buffer[:end]))
        if len(buffer) < total:
            return None
        frame = bytes(buffer[:total])
        del buffer[:total]
        self._scan_from = 0
        return frame

    def _skip_keepalives(self) -> bytes | None:
        """Drop CRLFs between messages; report a double-CRLF ping so the transport can pong.

        A lone CRLF is a pong (or padding) and is dropped silently. A trailing lone CRLF is
        kept until the next byte shows whether it starts a ping.
        """
        buffer = self._buffer
        while buffer[:2] == b"\r\n":
            if buffer[:4] == KEEPALIVE_PING:
                del buffer[:4]
                self._scan_from = 0
                return KEEPALIVE_PING
            if len(buffer) < 3 or (len(buffer) == 3 and buffer[2:3] == b"\r"):
                return None
            del buffer[:2]
            self._scan_from = 0
        return None

    def _content_length(self, head: bytes) -> int:
        found = _CONTENT_LENGTH_RE.findall(head)
        if not found:
            raise SipFramingError("missing Content-Length on a stream transport")
        values = {value.strip() for value in found}
        if len(values) != 1:
            raise SipFramingError("conflicting Content-Length headers")
        text = values.pop()
        if not text.isdigit() or len(text) > 12:
            raise SipFramingError(f"invalid Content-Length {text[:20]!r}")
        length = int(text)
        if length > self.max_body_size:
            raise SipFramingError(f"body of {length} bytes exceeds {self.max_body_size}")
        return length
